"""The simulated Chat SDK: one ``ChatClient`` = one SDK instance = one WebSocket connection.

Mirrors V2TIMManager (login / logout / getLoginUser / getLoginStatus + listener callbacks)
on plain ``gevent.socket`` sockets with wsproto (sans-IO): one reader greenlet per
connection, no threads. Every call returns an :class:`OpResult` with timing (unix ns) and
an outcome (``ok`` / ``fail`` / ``info``), so the Locust layer (harness/runner/users.py) can turn
it into a request event and a journal row. Calls never raise on network trouble.

The hot path is kept lean (it is what a load generator spends its CPU on): an IP-literal
target is connected to without a resolver call; the opening handshake is built and checked
here (:func:`upgrade_request`, :func:`check_upgrade_response`: status 101, ``Upgrade``,
``Connection``, ``Sec-WebSocket-Accept``) and only wsproto's frame layer runs afterwards;
close() sends the close frame and returns, the reader waits for the server's reply in the
background (bounded); no heartbeat greenlet unless ``heartbeat_interval`` is set.

Login status (V2TIM_STATUS_*: LOGINED=1, LOGINING=2, LOGOUT=3) follows the table
``protocol.SDK_TRANSITIONS`` (``protocol.next_status``), driven by these happenings:

* ``login_sent``: a login goes on the wire (a login while one is in flight is refused locally
  with 7501 and changes nothing);
* ``login_ok``: the server accepted it (user and session = the response's);
* ``login_failed``: a code other than 0, a timeout or connection loss (user "", session None);
* ``logout``: the logout's answer arrived, or it timed out / was lost (status 3 whatever the
  answer: 6014 means there was no session);
* ``kicked_offline`` / ``user_sig_expired``: an event for the *current* session;
* ``disconnect``: the connection closed (the server ends the session with it).

Whenever the status becomes 3, ``get_login_user()`` is "" and ``session_id`` None.
Events for a session that is not the current one (stale) still reach the listener but do
not change the state. State changes caused by server frames are applied in the reader
greenlet, in wire order, so an event that follows a response is always applied after it.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import gevent
from gevent import socket as gsocket
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from harness import protocol

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
    "accept_token",
    "check_upgrade_response",
    "parse_ws_url",
    "resolve_addresses",
    "upgrade_request",
]

log = logging.getLogger(__name__)

STATUS_LOGINED: int = protocol.STATUS_LOGINED
STATUS_LOGINING: int = protocol.STATUS_LOGINING
STATUS_LOGOUT: int = protocol.STATUS_LOGOUT

#: A login was asked for while another login on this client is still in flight.
CODE_LOGIN_IN_PROCESS: int = protocol.ERR_SDK_ACCOUNT_LOGIN_IN_PROCESS  # 7501
#: Transport-level trouble (not connected, timeout, connection lost, handshake failed).
CODE_TRANSPORT: int = protocol.ERR_TRANSPORT  # -1

RECV_CHUNK = 65536  # bytes per recv(); no per-connection receive buffer beyond wsproto's
MAX_MESSAGE_BYTES = 1 << 20  # a server message larger than this closes the connection (1009)
CLOSE_WAIT_S = 2.0  # after close(): how long the reader waits (in the background) for the server's close reply, s
MAX_HANDSHAKE_BYTES = 16384  # the server's HTTP 101 answer (status line + headers) must fit in this

#: RFC 6455 section 1.3: the GUID appended to Sec-WebSocket-Key for Sec-WebSocket-Accept.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: (address family, socket address) pairs to try in order, as ``socket.getaddrinfo`` gives them.
Addresses = Sequence[tuple[int, tuple]]

def parse_ws_url(url: str) -> tuple[str, int, str, str]:
    """Split ``ws://host:port/path?query`` into ``(host, port, target, host_header)``.

    ``host`` is bare (``::1`` for ``[::1]``); ``target`` is path + query, ``/ws`` when the URL
    has no path. Raises ``ValueError`` with one sentence on anything else (``wss`` is not
    supported: the harness only talks to loopback).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("client url must be a non-empty string like ws://127.0.0.1:8080/ws")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"client url {url!r} is not a valid ws:// URL ({exc})") from None
    if parts.scheme != "ws":
        raise ValueError(f"client url {url!r} must start with ws:// (got scheme {parts.scheme!r})")
    host = parts.hostname
    if not host:
        raise ValueError(f"client url {url!r} has no host")
    if port is None:
        port = 80
    target = parts.path or "/ws"
    if parts.query:
        target += "?" + parts.query
    shown = f"[{host}]" if ":" in host else host
    return host, port, target, f"{shown}:{port}"


def resolve_addresses(host: str, port: int) -> list[tuple[int, tuple]]:
    """Where to connect for ``host:port``: ``[(family, sockaddr), ...]`` in the order to try.

    An IP literal (``127.0.0.1``, ``::1``) is used as is, with no resolver call (gevent's
    ``create_connection`` hops to a thread pool for getaddrinfo even for those); a name is
    resolved with ``getaddrinfo`` (raises ``OSError`` / ``socket.gaierror`` when it cannot be).
    """
    for family in (gsocket.AF_INET, gsocket.AF_INET6):
        try:
            gsocket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return [(family, (host, port) if family == gsocket.AF_INET else (host, port, 0, 0))]
    infos = gsocket.getaddrinfo(host, port, 0, gsocket.SOCK_STREAM)
    out = [(family, sockaddr) for family, _type, _proto, _name, sockaddr in infos]
    if not out:
        raise OSError(f"{host!r} resolves to no address")
    return out


def accept_token(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``Sec-WebSocket-Key: key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def upgrade_request(target: str, host_header: str, key: bytes) -> bytes:
    """The client's HTTP/1.1 upgrade request (RFC 6455 4.1): no subprotocol, no extension."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: "
    ).encode("ascii") + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"


def check_upgrade_response(head: bytes, key: bytes) -> tuple[str, str] | None:
    """Judge the server's answer to an upgrade request (``head`` = status line + headers, without
    the blank line). None when it accepted the WebSocket, else ``(outcome, desc)`` with outcome
    ``fail``: a non-101 status (``handshake rejected: HTTP <status>``), a malformed answer or a bad
    ``Sec-WebSocket-Accept`` / ``Upgrade`` / ``Connection``, or a subprotocol or extension we did
    not offer. Pure: no I/O, never raises."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        return ("fail", "handshake: the server's answer is not an HTTP/1.x status line")
    status = int(parts[1])
    if status != 101:
        return ("fail", f"handshake rejected: HTTP {status}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        name = name.strip().lower()
        if not sep or not name:
            return ("fail", "handshake: malformed header line in the server's answer")
        value = value.strip()
        headers[name] = headers[name] + b", " + value if name in headers else value
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        return ("fail", "handshake: the server's 101 answer lacks 'Upgrade: websocket'")
    if b"upgrade" not in (t.strip() for t in headers.get(b"connection", b"").lower().split(b",")):
        return ("fail", "handshake: the server's 101 answer lacks 'Connection: Upgrade'")
    if headers.get(b"sec-websocket-accept") != accept_token(key):
        return ("fail", "handshake: bad Sec-WebSocket-Accept in the server's answer")
    if headers.get(b"sec-websocket-extensions"):
        return ("fail", "handshake: the server chose an extension the client did not offer")
    if headers.get(b"sec-websocket-protocol"):
        return ("fail", "handshake: the server chose a subprotocol the client did not offer")
    return None


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


_LOST = "connection lost"
_NOT_CONNECTED = "not connected"


class ChatClient:
    """One simulated SDK instance on one WebSocket connection (gevent + wsproto).

    Times are seconds (``connect_timeout``, ``request_timeout``, ``heartbeat_interval``).
    ``addresses``: where to connect, ``[(family, sockaddr), ...]`` as :func:`resolve_addresses`
    gives them (callers that make many clients for one URL resolve it once); default: resolved
    from the URL's host on the first connect() and kept for reconnects.
    Methods are meant to be called from one user greenlet; the reader and heartbeat
    greenlets are internal. Methods never raise on network trouble; they return an
    :class:`OpResult`.

    Recovery: after a loss, ``connect()`` on the same client opens a fresh connection (set
    ``conn_id`` first to name it); the caller logs in again, pacing attempts with
    :class:`Backoff` (harness.runner.users.Device does this). With ``lost_on_heartbeat_timeout`` a
    background heartbeat that gets no answer within ``request_timeout`` ends the connection
    (``on_disconnected`` reason ``error:HeartbeatTimeout``), as the SDK treats a black-holed link.
    """

    __slots__ = (
        "url",
        "sdk_app_id",
        "platform",
        "instance_id",
        "listener",
        "connect_timeout",
        "request_timeout",
        "heartbeat_interval",
        "source_address",
        "conn_id",
        "lost_on_heartbeat_timeout",
        "last_kick",
        "last_expiry",
        "close_code",
        "_host",
        "_port",
        "_target",
        "_host_header",
        "_addrs",
        "_sock",
        "_ws",
        "_send_lock",
        "_reader",
        "_linger",
        "_heartbeater",
        "_hb_sleeping",
        "_pending",
        "_seq",
        "_status",
        "_user",
        "_session",
        "_connected",
        "_closing",
        "_down",
        "_parts",
        "_parts_len",
    )

    def __init__(
        self,
        url: str,
        *,
        sdk_app_id: int,
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
    ) -> None:
        self._host, self._port, self._target, self._host_header = parse_ws_url(url)
        # where to connect: given (pre-resolved by the caller), else resolved on the first connect()
        self._addrs: Addresses | None = list(addresses) if addresses else None
        self.url = url
        self.sdk_app_id = sdk_app_id
        self.platform = platform
        self.instance_id = instance_id if instance_id is not None else f"{platform}-{uuid.uuid4().hex[:16]}"
        self.listener = listener
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.heartbeat_interval = heartbeat_interval if heartbeat_interval and heartbeat_interval > 0 else None
        self.source_address = source_address
        self.conn_id = conn_id
        self.lost_on_heartbeat_timeout = lost_on_heartbeat_timeout
        self.last_kick: Kick | None = None
        self.last_expiry: Expiry | None = None
        self.close_code: int | None = None
        self._sock: Any = None
        self._ws: Connection | None = None
        self._send_lock = Semaphore(1)
        self._reader: gevent.Greenlet | None = None
        self._linger: list = [None]  # this connection's reader's close timer (set by close())
        self._heartbeater: gevent.Greenlet | None = None
        self._hb_sleeping = False
        self._pending: dict[int, tuple[str, AsyncResult, str]] = {}
        self._seq = 0
        self._status = STATUS_LOGOUT
        self._user = ""
        self._session: str | None = None
        self._connected = False
        self._closing = False
        self._down = True
        self._parts: list[str] | None = None
        self._parts_len = 0

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

    # ---------------------------------------------------------------- connect

    def connect(self) -> OpResult:
        """TCP connect (from ``source_address`` when set) + WebSocket handshake; starts the reader.

        ok 0; fail -1 when it certainly did not connect (refused, rejected handshake);
        info -1 on a timeout.
        """
        start = time.time_ns()
        if self._connected or not self._down:
            return OpResult("connect", "fail", CODE_TRANSPORT, "already connected", start, time.time_ns())
        self._emit("on_connecting")
        deadline = time.monotonic() + self.connect_timeout
        sock = None
        try:
            sock = self._open_socket(deadline)
            key = base64.b64encode(os.urandom(16))
            sock.sendall(upgrade_request(self._target, self._host_header, key))
            outcome, rest = self._handshake(sock, key, deadline)
        except (TimeoutError, gsocket.timeout) as exc:
            outcome = ("info", f"timeout: {type(exc).__name__}")
        except OSError as exc:
            outcome = ("fail", f"{type(exc).__name__}: {exc.strerror or exc}")
        except BaseException:  # killed (GreenletExit) mid-connect: do not leak the socket
            if sock is not None:
                sock.close()
            raise
        if outcome is not None:
            if sock is not None:
                sock.close()
            end = time.time_ns()
            self._emit("on_connect_failed", CODE_TRANSPORT, outcome[1])
            return OpResult("connect", outcome[0], CODE_TRANSPORT, outcome[1], start, end)
        # wsproto's frame layer only (the handshake is done); bytes that came with the 101 are frames
        ws = Connection(ConnectionType.CLIENT, trailing_data=rest)
        sock.settimeout(None)
        self._sock = sock
        self._ws = ws
        self._seq = 0
        self._pending = {}
        self._parts = None
        self._parts_len = 0
        self.close_code = None
        self._status, self._user, self._session = STATUS_LOGOUT, "", None
        self._connected, self._closing, self._down = True, False, False
        self._linger = [None]
        self._reader = gevent.spawn(self._read_loop, sock, ws, self._linger)
        if self.heartbeat_interval:
            # first beat after a random offset in [0, interval): heartbeats are staggered
            self._hb_sleeping = True
            self._heartbeater = gevent.spawn_later(random.uniform(0, self.heartbeat_interval), self._heartbeat_loop,
                                                   self.heartbeat_interval)
        end = time.time_ns()
        self._emit("on_connect_success")
        return OpResult("connect", "ok", 0, "ok", start, end)

    def _open_socket(self, deadline: float) -> Any:
        """A TCP connection to the first address that answers (from ``source_address`` when set),
        TCP_NODELAY on; raises the last ``OSError`` when none does (a timeout when the deadline,
        monotonic seconds, passes)."""
        addrs = self._addrs
        if addrs is None:
            addrs = self._addrs = resolve_addresses(self._host, self._port)
        last: OSError | None = None
        for family, sockaddr in addrs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("connect timed out")
            sock = gsocket.socket(family, gsocket.SOCK_STREAM)
            try:
                sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
                if self.source_address:
                    sock.bind((self.source_address, 0))
                sock.settimeout(remaining)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                if isinstance(exc, TimeoutError):
                    raise
                last = exc
            except BaseException:
                sock.close()
                raise
        raise last if last is not None else OSError("no address to connect to")

    @staticmethod
    def _handshake(sock: Any, key: bytes, deadline: float) -> tuple[tuple[str, str] | None, bytes]:
        """Read the server's answer to the upgrade request: ``(None, bytes after it)`` when it
        accepted, else ``((outcome, desc), b"")`` (see :func:`check_upgrade_response`)."""
        buf = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ("info", "timeout: handshake"), b""
            sock.settimeout(remaining)
            data = sock.recv(RECV_CHUNK)
            if not data:
                return ("fail", "handshake: connection closed by server"), b""
            at = len(buf)
            buf += data
            end = buf.find(b"\r\n\r\n", max(0, at - 3))
            if end >= 0:
                return check_upgrade_response(buf[:end], key), buf[end + 4:]
            if len(buf) > MAX_HANDSHAKE_BYTES:
                return ("fail", f"handshake: the server's answer exceeds {MAX_HANDSHAKE_BYTES} bytes"), b""

    # --------------------------------------------------------------- requests

    def login(self, user_id: str, user_sig: str) -> OpResult:
        """Log in ``user_id`` with ``user_sig`` (status 2 while in flight).

        ok: status 1, ``session_id`` = the new session, ``data`` = the server's login data.
        fail (server code, or 7501 when another login is in flight: nothing is sent) /
        info -1 (timeout, connection lost): status 3 and user "" (except for 7501).
        """
        if self._status == STATUS_LOGINING:
            now = time.time_ns()
            return OpResult(
                "login", "fail", CODE_LOGIN_IN_PROCESS, protocol.code_label(CODE_LOGIN_IN_PROCESS), now, now
            )
        return self._call(
            "login",
            lambda seq: protocol.encode_login(seq, self.sdk_app_id, user_id, user_sig, self.platform, self.instance_id),
            user_id,
        )

    def logout(self) -> OpResult:
        """Log out; afterwards status 3 whatever the answer (6014 when there was no session).

        ``session_id`` of the result is the session held when the logout was sent.
        """
        return self._call("logout", lambda seq: protocol.encode_request("logout", seq))

    def status(self) -> OpResult:
        """Ask the server for its view of this connection; ``data`` = ``{"status", "userID", "sessionID", ...}``."""
        return self._call("status", lambda seq: protocol.encode_request("status", seq))

    def heartbeat(self) -> OpResult:
        """One heartbeat request; ``data`` = ``{"serverTime": ms}``."""
        return self._call("heartbeat", lambda seq: protocol.encode_request("heartbeat", seq))

    def _call(self, op: str, encode: Callable[[int], str], user_id: str = "") -> OpResult:
        start = time.time_ns()
        if not self._connected or self._closing:
            return OpResult(op, "fail", CODE_TRANSPORT, _NOT_CONNECTED, start, time.time_ns())
        self._seq += 1
        seq = self._seq
        frame = encode(seq)
        held = self._session
        ar: AsyncResult = AsyncResult()
        self._pending[seq] = (op, ar, user_id)
        if op == "login":
            self._apply("login_sent")
        sent = self._send_text(frame)
        if sent is not None:
            # "fail": nothing reached the wire; "info": maybe part of it did.
            self._pending.pop(seq, None)
            self._settle_unanswered(op)
            return OpResult(op, sent[0], CODE_TRANSPORT, sent[1], start, time.time_ns())
        ar.wait(self.request_timeout)
        if not ar.ready():
            self._pending.pop(seq, None)
            self._settle_unanswered(op)
            return OpResult(op, "info", CODE_TRANSPORT, f"timeout after {self.request_timeout:g} s", start, time.time_ns())
        resp = ar.value
        end = time.time_ns()
        if isinstance(resp, str):  # connection lost / closed while waiting
            return OpResult(op, "info", CODE_TRANSPORT, resp, start, end)
        data = resp.data if isinstance(resp.data, dict) else None
        if op == "login" or op == "status":
            session = data.get("sessionID") if data else None
            session = session if isinstance(session, str) else None
        elif op == "logout":
            session = held
        else:
            session = self._session
        outcome = "ok" if resp.code == 0 else "fail"
        return OpResult(op, outcome, resp.code, resp.desc, start, end, data, session)

    def _settle_unanswered(self, op: str) -> None:
        """State after a login/logout that got no answer (send failed or timed out)."""
        if op == "login" and self._status == STATUS_LOGINING:
            self._apply("login_failed")
        elif op == "logout":
            self._apply("logout")

    def _send_text(self, text: str) -> tuple[str, str] | None:
        """Send one text message (greenlet-safe). None on success, else (outcome, desc)."""
        with self._send_lock:
            ws, sock = self._ws, self._sock
            if ws is None or sock is None:
                return ("fail", _NOT_CONNECTED)
            try:
                data = ws.send(TextMessage(data=text))
            except LocalProtocolError:
                return ("fail", _NOT_CONNECTED)
            try:
                sock.sendall(data)
            except OSError as exc:
                return ("info", f"send: {type(exc).__name__}")
        return None

    def _send_event(self, event: Any) -> None:
        """Send a control event (pong, close); errors are ignored (the reader notices loss)."""
        with self._send_lock:
            ws, sock = self._ws, self._sock
            if ws is None or sock is None:
                return
            try:
                sock.sendall(ws.send(event))
            except (LocalProtocolError, OSError):
                pass

    # ----------------------------------------------------------------- reader

    def _read_loop(self, sock: Any, ws: Connection, linger: list) -> None:
        """The connection's reader: handles the server's frames while ``ws`` is the client's
        current connection. When close() hands the connection over (``self._ws`` no longer
        ``ws``), it only reads on until the server's close reply or EOF, bounded by the timer
        close() put in ``linger[0]``, then closes the socket: the caller does not wait for it."""
        reason = "closed_by_server"
        try:
            while self._ws is ws:
                stop = self._drain(ws)
                if stop is not None:
                    reason = stop
                    break
                data = sock.recv(RECV_CHUNK)
                if not data:
                    ws.receive_data(None)
                    if self._ws is ws:
                        self._drain(ws)
                    break
                ws.receive_data(data)
            else:
                self._finish_close(sock, ws)
        except (OSError, RemoteProtocolError, LocalProtocolError) as exc:
            reason = f"error:{type(exc).__name__}"
        except Exception as exc:  # a bug here must still end the connection cleanly
            log.exception("client %s: reader failed", self.conn_id)
            reason = f"error:{type(exc).__name__}"
        finally:
            if self._ws is ws:
                if not self._closing:
                    self._teardown(False, reason)
            else:  # handed over by close(), or torn down: the socket is done (close() is idempotent)
                timer = linger[0]
                if timer is not None:
                    linger[0] = None
                    timer.close()
                sock.close()

    @staticmethod
    def _finish_close(sock: Any, ws: Connection) -> None:
        """After our close frame: read until the server's close reply or EOF (frames are ignored)."""
        while True:
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    return
            data = sock.recv(RECV_CHUNK)
            if not data:
                return
            ws.receive_data(data)

    def _drain(self, ws: Connection) -> str | None:
        """Handle every pending wsproto event; a disconnect reason once the connection ends."""
        for event in ws.events():
            if self._ws is not ws:
                return "closed_by_client"
            if isinstance(event, TextMessage):
                if not self._on_text(event):
                    return "error:MessageTooBig"
            elif isinstance(event, Ping):
                self._send_event(event.response())
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._send_event(event.response())  # answer the server's close
                    return "closed_by_server"
                if ws.state is ConnectionState.OPEN:
                    # wsproto found a protocol violation in the server's frames
                    self._send_event(CloseConnection(code=event.code, reason="protocol error"))
                    return "error:ProtocolError"
                return "closed_by_server"
            elif isinstance(event, BytesMessage):
                log.debug("client %s: ignored a binary message", self.conn_id)
        return None

    def _on_text(self, event: TextMessage) -> bool:
        """Assemble (possibly fragmented) text; False when the message is too big (closed 1009)."""
        if event.message_finished and self._parts is None:
            text = event.data
        else:
            if self._parts is None:
                self._parts, self._parts_len = [], 0
            self._parts.append(event.data)
            self._parts_len += len(event.data)
            if self._parts_len > MAX_MESSAGE_BYTES:
                self._parts = None
                self._send_event(CloseConnection(code=1009, reason="message too big"))
                return False
            if not event.message_finished:
                return True
            text = "".join(self._parts)
            self._parts = None
        self._on_frame(text)
        return True

    def _on_frame(self, text: str) -> None:
        msg = protocol.parse_server_frame(text)
        if isinstance(msg, protocol.Response):
            entry = self._pending.pop(msg.seq, None) if isinstance(msg.seq, int) else None
            if entry is None:
                log.debug("client %s: response for unknown seq %r", self.conn_id, msg.seq)
                return
            op, ar, user_id = entry
            if op == "login":
                if msg.code == 0:
                    data = msg.data if isinstance(msg.data, dict) else {}
                    self._apply("login_ok")
                    sid = data.get("sessionID")
                    uid = data.get("userID")
                    self._session = sid if isinstance(sid, str) else None
                    self._user = uid if isinstance(uid, str) and uid else user_id
                else:
                    self._apply("login_failed")
            elif op == "logout":
                self._apply("logout")
            ar.set(msg)
        elif isinstance(msg, protocol.Event):
            now = time.time_ns()
            current = msg.session_id is not None and msg.session_id == self._session
            if msg.name == "kickedOffline":
                by = msg.by if isinstance(msg.by, dict) else None
                self.last_kick = Kick(msg.session_id, msg.reason or "", by, now)
                if current:
                    self._end_session("kicked_offline")
                self._emit("on_kicked_offline", msg.session_id, msg.reason or "", by, now)
            elif msg.name == "userSigExpired":
                self.last_expiry = Expiry(msg.session_id, now)
                if current:
                    self._end_session("user_sig_expired")
                self._emit("on_user_sig_expired", msg.session_id, now)
            else:
                log.debug("client %s: ignored event %r", self.conn_id, msg.name)
        else:
            log.debug("client %s: bad frame from server: %s", self.conn_id, getattr(msg, "desc", msg))

    # -------------------------------------------------------------- heartbeat

    def _heartbeat_loop(self, interval: float) -> None:
        """One heartbeat, then the next one ``interval`` seconds later (the first one is
        scheduled by connect() after a random offset in [0, interval)). Between beats a
        connection holds a timer and an unstarted greenlet, not a sleeping greenlet's saved
        stack: about 7 KiB less per held connection."""
        self._hb_sleeping = False
        if not self._connected or self._closing:
            return
        result = self.heartbeat()
        if result.desc == _NOT_CONNECTED:
            return
        self._emit("on_heartbeat", result)
        if not self._connected or self._closing:
            return
        if self.lost_on_heartbeat_timeout and result.outcome == "info" and result.desc.startswith("timeout"):
            # like the SDK: an unanswered heartbeat means the link is dead (black hole)
            self._teardown(False, "error:HeartbeatTimeout")
            return
        self._hb_sleeping = True
        self._heartbeater = gevent.spawn_later(interval, self._heartbeat_loop, interval)

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Close the connection (idempotent): send the WS close, end the connection, stop greenlets.

        Returns without waiting for the server's close reply: the reader reads it in the
        background (at most ``min(CLOSE_WAIT_S, request_timeout)`` s), then closes the socket.
        Pending calls end with info -1; ``on_disconnected(by_client=True)`` fires (before this
        returns) when the connection was still open. The client may connect() again at once.
        """
        if self._down or self._closing:
            return
        self._closing = True
        self._send_event(CloseConnection(code=1000, reason="bye"))
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent() and not reader.dead and self._sock is not None:
            timer = gevent.get_hub().loop.timer(min(CLOSE_WAIT_S, self.request_timeout))
            timer.start(reader.kill, gevent.GreenletExit, False)  # bounds the reader's wait for the reply
            self._linger[0] = timer
            self._teardown(True, "closed_by_client", hand_over=True)
        else:
            self._teardown(True, "closed_by_client")

    def _teardown(self, by_client: bool, reason: str, hand_over: bool = False) -> None:
        """End the connection once: close socket, stop greenlets, fail pending, notify.

        ``hand_over`` (close() only): the reader keeps running and closes the socket itself."""
        if self._down:
            return
        self._down = True
        was_connected = self._connected
        self._connected = False
        at = time.time_ns()
        current = gevent.getcurrent()
        hb = self._heartbeater
        # A heartbeat waiting for its answer is woken by the pending failure below and
        # reports it (info); only a sleeping heartbeater is killed.
        if hb is not None and hb is not current and not hb.dead and self._hb_sleeping:
            hb.kill(block=False)
        reader = self._reader
        if reader is not None and reader is not current and not reader.dead and not hand_over:
            reader.kill(block=False)
        self._heartbeater = None
        self._reader = None
        sock = self._sock
        # No lock here: a sender blocked in sendall() holds its own references and gets an
        # OSError once the socket closes (greenlets do not preempt between these lines).
        self._sock = None
        self._ws = None
        if sock is not None and not hand_over:
            try:
                sock.close()
            except OSError:
                pass
        pending, self._pending = self._pending, {}
        desc = "connection closed by client" if by_client else f"{_LOST} ({reason})"
        for _op, ar, _user in pending.values():
            ar.set(desc)
        session = self._session
        self._apply("disconnect")
        self._parts = None
        if was_connected:
            self._emit("on_disconnected", session, by_client, reason, at)

    def __repr__(self) -> str:
        return (
            f"ChatClient({self.url!r}, conn_id={self.conn_id!r}, connected={self._connected}, "
            f"status={self._status}, user={self._user!r}, session={self._session!r})"
        )
