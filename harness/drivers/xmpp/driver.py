"""XmppDriver: the :class:`harness.sdk.driver.Driver` protocol over XMPP (gevent event loop).

One driver = one XMPP stream at a time (TCP port 5222, or RFC 7395 WebSocket with subprotocol
``xmpp``). Without TLS the socket is a plain non-blocking OS socket read by a hub I/O watcher
(as the ``tim`` driver does): no reader greenlet, no gevent socket wrapper, and no ``recv``
before the hub said the socket is readable; the watcher's callback decodes and handles what
arrived, in the hub. With TLS (STARTTLS, ``wss``) the socket goes to gevent's SSL layer and one
reader greenlet reads it. The codec (``codec.py``) is sans-IO; this module only moves bytes
and runs the login exchange.

How the calls map onto XMPP
---------------------------

* ``connect(deadline)``: TCP (from ``source_address``), the WebSocket handshake in ``ws`` mode,
  the stream header, ``<stream:features>``; STARTTLS + a new stream when ``tls`` is ``always``
  or (``auto``) when the server marks it ``<required/>``. Runs in the calling greenlet; the
  reader (watcher or greenlet) starts once the first features arrived.
* ``login``: SASL (PLAIN / SCRAM-SHA-1 / SCRAM-SHA-256, ``auto`` = best offered; a JWT always
  goes as PLAIN) -> ``<success/>`` (SCRAM: the server signature is verified) -> stream restart
  -> features -> bind (resource = ``instance_id``) -> [session when not optional] -> initial
  ``<presence/>``. The caller sends ``<auth/>``; the reader runs every later step and
  produces the answer. ``Reply.session_id`` = ``<stream id>:<full JID>`` (stream id of the
  restarted stream).

  - Pipelining (``pipeline=True``, the default; ejabberd and Prosody both accept it): right
    after ``<success/>`` (SCRAM: once the server signature verified) the new stream header
    and the bind request go out in one write, without waiting for the new features; the
    initial presence rides along too when the last restarted stream of the same target
    (host, port, transport, domain, TLS; a module-wide hint) offered bind with no required
    ``<session/>``. The features that come back are still checked: no bind offered ->
    ``fail 70500 bind-not-offered`` (as without pipelining); ``<session/>`` required -> the
    session request follows the bind result and the presence follows the session result
    (when the hint was stale the presence already went out: the session is still
    established, and the hint is corrected for the next login). ``pipeline=False``: one
    step per round trip (header, features, bind, result, [session], presence).

  - A JWT credential whose ``exp`` has passed is refused locally: ``fail 6206`` with nothing
    sent (the Tencent SDK's ERR_USER_SIG_EXPIRED).
  - XMPP cannot authenticate a stream twice: when this driver already holds a session (or
    its stream already passed SASL), login ends that stream first (unavailable presence,
    ``</stream:stream>``, a bounded wait for the server's close, socket closed) and opens a
    fresh one within the same ``timeout``. **Deviation / choice:** login also reconnects
    transparently when the transport is gone (after logout, a loss or a kick) once this
    driver has connected before; before the first ``connect()`` it answers ``fail -1 not
    connected``.
  - ``sink.login_answered(reply, user_id)`` is called from the reader, before any later
    stanza is handled, for every answer the *server* produced (success, SASL failure, bind
    error, stream error during login, a SCRAM signature that does not verify). Answers made
    locally (6206, 7501, not connected, timeout, connection lost) are only returned.
  - A login that times out (``info -1 timeout after N s``) closes the stream, so a late
    success cannot leave a session the SDK does not know about.

* ``logout``: XMPP has no logout that keeps the stream: unavailable presence +
  ``</stream:stream>``, a bounded wait (``timeout``) for the server's close, socket closed.
  ``ok 0`` with the session held (``info -1`` when the server never closed); ``fail 6014 not
  logged in`` without a session. Afterwards the driver is disconnected (login reconnects).
* ``heartbeat``: XEP-0199 ping to the domain; any iq answer -> ``ok 0`` (``desc`` is the error
  condition when the server answered with an error: it is alive all the same),
  ``data={"serverTime": None}``. ``status`` -> None (no server-side view).
* Server pings are answered; other server iq get/set get ``service-unavailable``.

Events (from the reader: the hub, or the TLS reader greenlet; never blocking)
------------------------------------------------------------------------------

* ``<stream:error><conflict/>`` while a session is held -> ``sink.kicked(session, reason,
  {"condition": "conflict", "text": text}, at_ns)``: ejabberd (same resource or
  ``max_user_sessions`` overflow) and Prosody (``kick_old``) both say "Replaced by new
  connection" and the wire cannot tell the two apart, so ``reason`` is ``same_instance`` when
  the caller set ``resource_shared = True`` and ``multi_device`` otherwise; a conflict with
  any other text is an admin ``kick_session`` with its reason -> ``rest_kick``.
  ``<policy-violation/>`` whose text mentions a kick (ejabberd ``kick_user``) -> ``rest_kick``.
* Then, as for every end of the transport not asked for by ``close()`` / ``logout()``:
  ``sink.lost(reason, at_ns)`` once, ``reason`` = ``error:<condition>`` after a stream error,
  ``error:xml-not-well-formed`` / ``error:stanza-too-big`` / ``error:restricted-xml`` after bad
  input from the server (answered with a stream error first), ``closed_by_server`` after
  ``</stream:stream>`` or EOF, ``error:<ERRNO>`` (``error:ECONNRESET``) on a socket error.

Calls never raise on network or protocol trouble and every wait is bounded.
"""
from __future__ import annotations

import base64
import errno
import itertools
import logging
import os
import time
from typing import Any, ClassVar

from _socket import IPPROTO_TCP, SOCK_STREAM, SOL_SOCKET, SO_ERROR, TCP_NODELAY
from _socket import socket as _rawsocket

import gevent
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.event import AsyncResult, Event as GEvent
from gevent.hub import Waiter
from gevent.lock import Semaphore
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping as WsPing, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from harness import protocol
from harness.drivers.websocket import MAX_HANDSHAKE_BYTES, RECV_CHUNK, check_upgrade_response, resolve_addresses, upgrade_request
from harness.drivers.xmpp import codec as C
from harness.drivers.xmpp.jwt import looks_like_jwt, token_exp
from harness.sdk.driver import Reply, Sink

__all__ = ["XmppDriver"]

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 2.0  # close(): how long the reader waits in the background for the server's goodbye, s
SWITCH_CLOSE_WAIT_S = 1.0  # login on a used stream: longest wait for the old stream's close, s

_LOST = "connection lost"
_NOT_CONNECTED = "not connected"


_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EAGAIN})

#: One receive buffer for every plain connection of the process: read-watcher callbacks run one
#: at a time in the hub and copy out what they read before they return.
_RBUF = bytearray(RECV_CHUNK)
_RVIEW = memoryview(_RBUF)


def _fast_connect(sock: Any, sockaddr: Any) -> bool:
    """Try to finish a TCP connect without a trip through the event loop: True when connected.

    A non-blocking connect answers EINPROGRESS; on loopback the handshake is done by the time
    that call returns, so asking again answers 0 (connected) or the failure (ECONNREFUSED ...,
    raised as ``OSError``). Still in progress (a remote host): False, and the caller waits for
    the socket to become writable. ``sock``: a non-blocking OS socket (or a gevent one)."""
    raw = getattr(sock, "_sock", sock)
    err = raw.connect_ex(sockaddr)
    if err in _IN_PROGRESS:
        err = raw.connect_ex(sockaddr)
    if err == 0 or err == errno.EISCONN:
        return True
    if err in _IN_PROGRESS:
        return False
    raise OSError(err, os.strerror(err))


def _write(sock: Any, data: bytes) -> None:
    """sendall for small writes: one send(2) is the common case (gevent's sendall asks the
    socket's buffer size first and slices)."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def _errname(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


class _Answer:
    """The login's answer for the one greenlet waiting on it: gevent's ``Waiter`` and one raw
    loop timer (an ``AsyncResult`` wait makes a ``Timeout`` object per wait). ``set`` may be
    called from any greenlet; the wake-up goes through the hub."""

    __slots__ = ("value", "done", "_waiter")

    def __init__(self) -> None:
        self.value: Any = None
        self.done = False
        self._waiter: Waiter | None = None

    def ready(self) -> bool:
        return self.done

    def set(self, value: Any) -> None:
        if self.done:
            return
        self.value = value
        self.done = True
        w = self._waiter
        if w is not None:
            self._waiter = None
            w.hub.loop.run_callback(w.switch, None)

    def wait(self, timeout: float) -> None:
        """Return when set or after ``timeout`` s (check :meth:`ready`)."""
        if self.done or timeout <= 0:
            return
        hub = gevent.get_hub()
        w = Waiter(hub)
        timer = hub.loop.timer(timeout)
        timer.start(w.switch, None, update=True)  # from now, not from the loop's stale iteration time
        self._waiter = w
        try:
            w.get()
        finally:
            timer.close()
            self._waiter = None


class _Login:
    """One login in flight on one stream (state for the reader)."""

    __slots__ = ("user_id", "mechanism", "scram", "scram_stage", "resource", "result", "step", "iq_id",
                 "exp", "jid", "presence_sent")

    def __init__(self, user_id: str, mechanism: str, scram: C.ScramClient | None, resource: str,
                 exp: int | None) -> None:
        self.user_id = user_id
        self.mechanism = mechanism
        self.scram = scram
        self.scram_stage = 0
        self.resource = resource
        self.result = _Answer()
        self.step = "auth"  # auth -> restart -> bind -> session -> done
        self.iq_id: str | None = None
        self.exp = exp
        self.jid: str | None = None
        self.presence_sent = False  # the initial presence went out pipelined behind the bind


#: What the last restarted stream of a target offered, keyed (host, port, transport, domain, tls):
#: True when it offered bind with no required <session/>, so the initial presence may be
#: pipelined behind the bind request. Bounded (a few targets per run).
_POST_AUTH_HINTS: dict[tuple, bool] = {}
_MAX_HINTS = 256


class _Conn:
    """One transport: socket (+ wsproto), codec, reader, what the stream holds."""

    __slots__ = ("sock", "wsc", "codec", "lock", "reader", "stream_id", "features", "tls", "authed", "session",
                 "login", "iqs", "by_client", "down", "goodbye", "backlog", "parts", "parts_len", "linger", "io", "fd",
                 "plain")

    def __init__(self, sock: Any, codec: C.XmppCodec) -> None:
        self.sock = sock
        self.wsc: Connection | None = None
        self.codec = codec
        self.lock: Semaphore | None = None  # made when a send has to wait (or on a TLS socket)
        self.reader: gevent.Greenlet | None = None  # TLS only: the reader greenlet
        # plain (no TLS): ``sock`` is a non-blocking OS socket read by ``io``, a read watcher
        # whose callback runs in the hub; None once the socket went to gevent (TLS)
        self.plain = True
        self.fd = sock.fileno()
        self.io: Any = gevent.get_hub().loop.io(self.fd, 1)
        self.stream_id: str | None = None
        self.features: C.Features | None = None
        self.tls = False
        self.authed = False  # SASL succeeded on this stream (it cannot authenticate again)
        self.session: str | None = None
        self.login: _Login | None = None
        self.iqs: dict[str, AsyncResult] = {}
        self.by_client = False  # close()/logout() took it over: the end is not a loss
        self.down = False
        self.goodbye: GEvent | None = None  # made by a wait for the server's close (set when it, EOF or the end came)
        self.backlog: list = []
        self.parts: list[str] | None = None
        self.parts_len = 0
        self.linger: Any = None


class XmppDriver:
    """One XMPP client connection for the simulated SDK (see the module docstring).

    ``transport`` ``tcp`` | ``ws``; ``ws_path`` ``/ws`` (ejabberd) or ``/xmpp-websocket``
    (Prosody); ``mechanism`` ``PLAIN`` | ``SCRAM-SHA-1`` | ``SCRAM-SHA-256`` | ``auto``; ``tls``
    ``auto`` (STARTTLS only when required) | ``never`` | ``always`` (WebSocket: TLS under the
    HTTP upgrade); ``connect_timeout`` seconds; ``max_stanza_bytes`` bounds one stanza / frame.
    ``pipeline`` (default True): send the restarted stream header + bind [+ presence] in one write
    right after ``<success/>`` (see the module docstring); False: one step per round trip.
    ``resource_shared``: set True when the caller logs several drivers in with the same
    resource, so a ``<conflict/>`` is reported as ``same_instance``.
    """

    protocol: ClassVar[str] = "xmpp"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, host: str, port: int, domain: str, sink: Sink, transport: str = "tcp",
                 ws_path: str = "/ws", mechanism: str = "auto", tls: str = "auto",
                 source_address: str | None = None, connect_timeout: float = 10.0,
                 max_stanza_bytes: int = C.DEFAULT_MAX_STANZA_BYTES, pipeline: bool = True) -> None:
        if transport not in ("tcp", "ws"):
            raise ValueError(f"transport must be 'tcp' or 'ws' (got {transport!r})")
        if mechanism != "auto" and mechanism not in C.SCRAM_HASHES and mechanism != "PLAIN":
            raise ValueError(f"mechanism must be PLAIN, SCRAM-SHA-1, SCRAM-SHA-256 or auto (got {mechanism!r})")
        if tls not in ("auto", "never", "always"):
            raise ValueError(f"tls must be 'auto', 'never' or 'always' (got {tls!r})")
        self.host = host
        self.port = int(port)
        self.domain = domain
        self.sink = sink
        self.transport = transport
        self.ws = transport == "ws"
        self.ws_path = ws_path
        self.mechanism = mechanism
        self.tls = tls
        self.source_address = source_address
        self.connect_timeout = connect_timeout
        self.max_stanza_bytes = max_stanza_bytes
        self.pipeline = pipeline
        self.resource_shared = False
        self._idle = GEvent()   # set while no login owns the stream
        self._idle.set()
        self.last_mechanism: str | None = None
        self._addrs: list | None = None
        self._conn: _Conn | None = None
        self._used = False  # connect() succeeded once: login may reconnect by itself
        self._last_tls = False
        self._ids = itertools.count(1)  # iq ids: unique per stream is enough (RFC 6120 8.1.3)

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """True between a successful connect() and close() / logout / loss."""
        conn = self._conn
        return conn is not None and not conn.down

    @property
    def session_id(self) -> str | None:
        """The session this driver holds (``<stream id>:<full JID>``), None when none."""
        conn = self._conn
        return conn.session if conn is not None else None

    def describe(self) -> dict[str, Any]:
        conn = self._conn
        return {"protocol": self.protocol, "transport": self.transport, "mechanism": self.last_mechanism,
                "tls": conn.tls if conn is not None else self._last_tls, "domain": self.domain,
                "host": self.host, "port": self.port}

    def status(self, timeout: float) -> Reply | None:
        """Unsupported: XMPP gives a client no server-side view of its connection."""
        return None

    # ---------------------------------------------------------------- connect

    def connect(self, deadline: float) -> tuple[str, str] | None:
        """Open the transport and the stream (see the module docstring). None when connected,
        else ``(outcome, desc)``: ``fail`` when it certainly did not connect, ``info`` on a timeout."""
        if self._conn is not None and not self._conn.down:
            return ("fail", "already connected")
        sock = None
        conn: _Conn | None = None
        timer = None
        try:
            # one timer bounds the whole connect (socket waits carry no Timeout of their own)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("connect timed out")
            timer = gevent.get_hub().loop.timer(remaining)
            timer.start(gevent.getcurrent().throw, TimeoutError("timed out"), update=True)
            sock = self._open_socket(deadline)
            conn = _Conn(sock, C.XmppCodec(ws=self.ws, max_stanza_bytes=self.max_stanza_bytes))
            if self.ws:
                if self.tls == "always":
                    conn.sock = self._wrap_tls(self._to_gevent(conn), deadline)
                    conn.tls = True
                verdict = self._ws_handshake(conn, deadline)
            if not self.ws or verdict is None:
                verdict = self._open_stream(conn, deadline)
        except (TimeoutError, gsocket.timeout) as exc:
            verdict = ("info", f"timeout: {type(exc).__name__}")
        except gssl.SSLError as exc:
            verdict = ("fail", f"tls: {exc.reason or exc}")
        except OSError as exc:
            verdict = ("fail", f"{type(exc).__name__}: {exc.strerror or exc}")
        except (RemoteProtocolError, LocalProtocolError) as exc:
            verdict = ("fail", f"websocket: {type(exc).__name__}")
        except BaseException:
            self._close_conn_quietly(conn, sock)
            raise
        finally:
            if timer is not None:
                timer.close()
        if verdict is not None or conn is None:
            self._close_conn_quietly(conn, sock)
            return verdict or ("fail", _NOT_CONNECTED)
        self._conn = conn
        self._used = True
        self._last_tls = conn.tls
        io = conn.io
        if not conn.plain:  # TLS: gevent's SSL socket, read by a greenlet
            conn.sock.settimeout(None)
            conn.reader = gevent.spawn(self._read_loop, conn)
            return None
        io.start(self._on_readable, conn)
        if conn.backlog:  # stanzas that came with the features: handled from the hub, before any read
            gevent.get_hub().loop.run_callback(self._on_backlog, conn)
        return None

    def _close_conn_quietly(self, conn: _Conn | None, sock: Any) -> None:
        if conn is not None:
            io, conn.io = conn.io, None
            if io is not None:
                io.close()
            sock = conn.sock
        self._close_quietly(sock)

    @staticmethod
    def _to_gevent(conn: _Conn) -> Any:
        """Hand the plain socket of ``conn`` to gevent (for TLS): returns the gevent socket."""
        io, conn.io = conn.io, None
        if io is not None:
            io.close()
        raw = conn.sock
        conn.plain = False
        conn.sock = gsocket.socket(raw.family, SOCK_STREAM, fileno=raw.detach())
        return conn.sock

    def _recv(self, conn: _Conn) -> bytes:
        """Connect phase: the next bytes (b"" = EOF), waiting for them first (no read that can only
        answer EAGAIN); bounded by connect()'s timer."""
        io = conn.io
        if not conn.plain:
            return conn.sock.recv(RECV_CHUNK)
        hub = gevent.get_hub()
        while True:
            hub.wait(io)
            try:
                n = conn.sock.recv_into(_RBUF)
            except BlockingIOError:
                continue
            return bytes(_RVIEW[:n])

    def _sendall(self, conn: _Conn, data: bytes) -> None:
        """Connect phase: send all of ``data`` (waits for the socket when it must); raises OSError."""
        if not conn.plain:
            conn.sock.sendall(data)
            return
        try:
            n = conn.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            self._send_rest(conn, data[n:])

    def _send_rest(self, conn: _Conn, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if conn.down:
                raise OSError(errno.EBADF, "connection closed")
            try:
                n = conn.sock.send(view)
            except BlockingIOError:
                try:
                    gsocket.wait_write(conn.fd, 1.0)  # re-checks ``down`` at least every second
                except TimeoutError:
                    pass
                continue
            view = view[n:]

    def _send_rest_release(self, conn: _Conn, lock: Semaphore, data: bytes) -> None:
        try:
            self._send_rest(conn, data)
        except OSError:
            pass
        finally:
            lock.release()

    def _send_locked(self, conn: _Conn, lock: Semaphore, data: bytes) -> None:
        with lock:
            try:
                self._send_rest(conn, data)
            except OSError:
                pass

    @staticmethod
    def _close_quietly(sock: Any) -> None:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _open_socket(self, deadline: float) -> Any:
        """A connected non-blocking OS socket (plain: no gevent wrapper). On loopback the
        handshake is done when the second connect_ex answers; else wait for it (within
        connect()'s timer)."""
        addrs = self._addrs
        if addrs is None:
            addrs = self._addrs = resolve_addresses(self.host, self.port)
        last: OSError | None = None
        for family, sockaddr in addrs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("connect timed out")
            sock = _rawsocket(family, SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
                if self.source_address:
                    sock.bind((self.source_address, 0))
                if _fast_connect(sock, sockaddr):
                    return sock
                gsocket.wait_write(sock.fileno())  # still in progress (a remote host)
                err = sock.getsockopt(SOL_SOCKET, SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
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

    def _wrap_tls(self, sock: Any, deadline: float) -> Any:
        """TLS client on ``sock`` without certificate checks (loopback servers are self-signed)."""
        ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("tls handshake timed out")
        sock.settimeout(remaining)
        return ctx.wrap_socket(sock, server_hostname=self.domain)

    def _ws_handshake(self, conn: _Conn, deadline: float) -> tuple[str, str] | None:
        key = base64.b64encode(os.urandom(16))
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self._sendall(conn, upgrade_request(self.ws_path, f"{shown}:{self.port}", key, "xmpp"))
        buf = b""
        while True:
            if deadline - time.monotonic() <= 0:
                return ("info", "timeout: handshake")
            data = self._recv(conn)  # bounded by connect()'s timer
            if not data:
                return ("fail", "handshake: connection closed by server")
            at = len(buf)
            buf += data
            end = buf.find(b"\r\n\r\n", max(0, at - 3))
            if end >= 0:
                verdict = check_upgrade_response(buf[:end], key, "xmpp")
                if verdict is None:
                    conn.wsc = Connection(ConnectionType.CLIENT, trailing_data=buf[end + 4:])
                return verdict
            if len(buf) > MAX_HANDSHAKE_BYTES:
                return ("fail", f"handshake: the server's answer exceeds {MAX_HANDSHAKE_BYTES} bytes")

    def _open_stream(self, conn: _Conn, deadline: float) -> tuple[str, str] | None:
        """Stream header -> features (-> STARTTLS -> header -> features), in the calling greenlet."""
        header = C.stream_header(self.domain, self.ws)
        self._sendall(conn, self._frame(conn, header))
        tls_asked = False
        events: list = []
        if conn.wsc is not None:  # frames that came with the 101 answer
            events = self._decode(conn, b"")
        while True:
            for i, ev in enumerate(events):
                if isinstance(ev, C.StreamOpened):
                    conn.stream_id = ev.id
                elif isinstance(ev, C.Features):
                    need_tls = not self.ws and not conn.tls and (
                        self.tls == "always" or (self.tls == "auto" and ev.starttls_required))
                    if need_tls and not tls_asked:
                        if not ev.starttls:
                            return ("fail", "tls: the server does not offer STARTTLS")
                        self._sendall(conn, C.starttls().encode())
                        tls_asked = True
                        continue
                    conn.features = ev
                    conn.backlog = events[i + 1:]
                    return None
                elif isinstance(ev, C.TlsProceed):
                    conn.sock = self._wrap_tls(self._to_gevent(conn) if conn.plain else conn.sock, deadline)
                    conn.tls = True
                    conn.codec.reset()
                    conn.sock.sendall(header.encode())
                    break  # nothing can follow <proceed/> in clear text
                elif isinstance(ev, C.TlsFailure):
                    return ("fail", "tls: the server refused STARTTLS")
                elif isinstance(ev, C.StreamError):
                    return ("fail", f"stream error: {ev.condition}" + (f" ({ev.text})" if ev.text else ""))
                elif isinstance(ev, C.ParseError):
                    return ("fail", f"stream: {ev.reason}")
                elif isinstance(ev, C.StreamClosed):
                    return ("fail", "stream closed by server")
            if deadline - time.monotonic() <= 0:
                return ("info", "timeout: stream features")
            data = self._recv(conn)  # bounded by connect()'s timer
            if not data:
                return ("fail", "stream: connection closed by server")
            events = self._decode(conn, data)

    # ------------------------------------------------------------- bytes I/O

    def _frame(self, conn: _Conn, text: str) -> bytes:
        wsc = conn.wsc
        if wsc is None:
            return text.encode("utf-8")
        return wsc.send(TextMessage(data=text))

    def _send(self, conn: _Conn, *texts: str) -> tuple[str, str] | None:
        """Send elements (WS: one frame each). None, or (outcome, desc). Never blocks the hub:
        from a read callback, a rest that does not fit goes out from a greenlet, in order."""
        if conn.down:
            return ("fail", _NOT_CONNECTED)
        try:
            if conn.wsc is None:
                data = "".join(texts).encode("utf-8") if len(texts) > 1 else texts[0].encode("utf-8")
            else:
                data = b"".join(conn.wsc.send(TextMessage(data=t)) for t in texts)
        except LocalProtocolError:
            return ("fail", _NOT_CONNECTED)
        return self._send_data(conn, data)

    def _send_data(self, conn: _Conn, data: bytes) -> tuple[str, str] | None:
        lock = conn.lock
        if not conn.plain:  # gevent's SSL socket
            if lock is None:
                lock = conn.lock = Semaphore(1)
            with lock:
                if conn.down:
                    return ("fail", _NOT_CONNECTED)
                try:
                    _write(conn.sock, data)
                except OSError as exc:
                    return ("info", f"send: {_errname(exc)}")
            return None
        if lock is None or not lock.locked():
            try:
                n = conn.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                return ("info", f"send: {_errname(exc)}")
            if n == len(data):
                return None
            data = data[n:]
            if lock is None:
                lock = conn.lock = Semaphore(1)
        hub = gevent.get_hub()
        if gevent.getcurrent() is hub:
            if not lock.locked():
                lock.acquire(blocking=False)  # keeps later sends behind this rest
                gevent.spawn(self._send_rest_release, conn, lock, data)
            else:
                gevent.spawn(self._send_locked, conn, lock, data)
            return None
        with lock:
            try:
                self._send_rest(conn, data)
            except OSError as exc:
                return ("info", f"send: {_errname(exc)}")
        return None

    def _decode(self, conn: _Conn, data: bytes) -> list:
        """Bytes from the socket -> codec events (WS: through wsproto, one codec feed per message)."""
        wsc = conn.wsc
        if wsc is None:
            return conn.codec.feed(data)
        if data:
            wsc.receive_data(data)
        out: list = []
        for event in wsc.events():
            if isinstance(event, TextMessage):
                if event.message_finished and conn.parts is None:
                    out.extend(conn.codec.feed(event.data))
                    continue
                if conn.parts is None:
                    conn.parts, conn.parts_len = [], 0
                conn.parts.append(event.data)
                conn.parts_len += len(event.data)
                if conn.parts_len > self.max_stanza_bytes:
                    conn.parts = None
                    out.append(C.ParseError("policy-violation", "stanza-too-big", "a frame is too big"))
                    return out
                if event.message_finished:
                    text = "".join(conn.parts)
                    conn.parts = None
                    out.extend(conn.codec.feed(text))
            elif isinstance(event, WsPing):
                try:
                    self._send_data(conn, wsc.send(event.response()))
                except LocalProtocolError:
                    pass
            elif isinstance(event, CloseConnection):
                if wsc.state is ConnectionState.REMOTE_CLOSING:
                    try:
                        self._send_data(conn, wsc.send(event.response()))
                    except LocalProtocolError:
                        pass
                out.append(C.StreamClosed())
                return out
            elif isinstance(event, BytesMessage):
                out.append(C.ParseError("xml-not-well-formed", "xml-not-well-formed", "binary frame"))
                return out
        return out

    # ----------------------------------------------------------------- reader

    def _read_loop(self, conn: _Conn) -> None:
        reason = "closed_by_server"
        try:
            if conn.backlog:
                events, conn.backlog = conn.backlog, []
                stop = self._dispatch(conn, events)
                if stop is not None:
                    reason = stop
                    return
            sock = conn.sock
            while not conn.down:
                data = sock.recv(RECV_CHUNK)
                if not data:
                    return
                stop = self._dispatch(conn, self._decode(conn, data))
                if stop is not None:
                    reason = stop
                    return
        except (OSError, RemoteProtocolError, LocalProtocolError) as exc:
            reason = f"error:{_errname(exc)}"
        except gevent.GreenletExit:
            reason = "closed_by_client"
        except Exception as exc:  # a bug here must still end the connection cleanly
            log.exception("xmpp driver: reader failed")
            reason = f"error:{type(exc).__name__}"
        finally:
            self._teardown(conn, reason)

    def _on_readable(self, conn: _Conn) -> None:
        """Plain connections: the socket is readable (hub callback; must not block)."""
        if conn.down:
            return
        try:
            n = conn.sock.recv_into(_RBUF)
        except BlockingIOError:
            return
        except OSError as exc:
            self._teardown(conn, f"error:{_errname(exc)}")
            return
        if not n:
            self._teardown(conn, "closed_by_server")
            return
        try:
            stop = self._dispatch(conn, self._decode(conn, bytes(_RVIEW[:n])))
        except (RemoteProtocolError, LocalProtocolError) as exc:
            stop = f"error:{_errname(exc)}"
        except Exception as exc:  # a bug here must still end the connection cleanly
            log.exception("xmpp driver: reader failed")
            stop = f"error:{type(exc).__name__}"
        if stop is not None:
            self._teardown(conn, stop)

    def _on_backlog(self, conn: _Conn) -> None:
        if conn.down or not conn.backlog:
            return
        events, conn.backlog = conn.backlog, []
        try:
            stop = self._dispatch(conn, events)
        except Exception as exc:  # pragma: no cover - as in _on_readable
            log.exception("xmpp driver: reader failed")
            stop = f"error:{type(exc).__name__}"
        if stop is not None:
            self._teardown(conn, stop)

    def _linger_over(self, conn: _Conn) -> None:
        self._teardown(conn, "closed_by_client")

    def _dispatch(self, conn: _Conn, events: list) -> str | None:
        """Handle the server's events in order; a reason string once the stream is over."""
        for ev in events:
            if conn.by_client:  # close()/logout() took over: only wait for the goodbye
                if isinstance(ev, (C.StreamClosed, C.StreamError, C.ParseError)):
                    return "closed_by_client"
                continue
            kind = type(ev)
            if kind is C.IqResult or kind is C.IqError:
                self._on_iq(conn, ev)
            elif kind is C.Ping:
                self._send(conn, C.pong(ev.id, ev.from_))
            elif kind is C.SaslChallenge or kind is C.SaslSuccess or kind is C.SaslFailure:
                self._on_sasl(conn, ev)
            elif kind is C.StreamOpened:
                conn.stream_id = ev.id
            elif kind is C.Features:
                conn.features = ev
                login = conn.login
                if login is not None and login.step == "restart":
                    self._remember(conn, ev)
                    if not ev.bind:
                        self._login_done(conn, Reply("fail", protocol.ERR_SVR_ACCOUNT_INTERNAL_ERROR, "bind-not-offered"))
                        continue
                    login.step = "bind"
                    if login.iq_id is None:  # not pipelined (pipeline=False)
                        login.iq_id = f"b{next(self._ids)}"
                        self._send(conn, C.bind(login.iq_id, login.resource))
            elif kind is C.IqRequest:
                if ev.type in ("get", "set"):
                    self._send(conn, C.iq_error(ev.id, ev.from_))
            elif kind is C.StreamError:
                return self._on_stream_error(conn, ev)
            elif kind is C.StreamClosed:
                self._send(conn, C.stream_close(self.ws))
                return "closed_by_server"
            elif kind is C.ParseError:
                self._send(conn, C.stream_error(ev.condition), C.stream_close(self.ws))
                return f"error:{ev.reason}"
            # Other (message, presence, unknown nonza): ignored
        return None

    def _hint_key(self, conn: _Conn) -> tuple:
        return (self.host, self.port, self.transport, self.domain, conn.tls)

    def _remember(self, conn: _Conn, feats: C.Features) -> None:
        """Note whether this target's restarted stream lets the presence ride with the bind."""
        ok = feats.bind and (not feats.session or feats.session_optional)
        key = self._hint_key(conn)
        if _POST_AUTH_HINTS.get(key) is not ok:
            if len(_POST_AUTH_HINTS) >= _MAX_HINTS:
                _POST_AUTH_HINTS.clear()
            _POST_AUTH_HINTS[key] = ok

    def _on_sasl(self, conn: _Conn, ev: Any) -> None:
        login = conn.login
        if login is None or login.step != "auth":
            return
        if isinstance(ev, C.SaslFailure):
            code, desc = C.map_condition("sasl", ev.condition)
            self._login_done(conn, Reply("fail", code, desc, {"text": ev.text} if ev.text else None))
            return
        scram = login.scram
        try:
            if isinstance(ev, C.SaslChallenge):
                if scram is None:
                    raise C.ScramError("unexpected-challenge", "a challenge for PLAIN")
                if login.scram_stage == 0:
                    login.scram_stage = 1
                    self._send(conn, C.sasl_response(scram.final(ev.data)))
                elif login.scram_stage == 1:  # server-final as a challenge (RFC 6120 6.3.10)
                    scram.verify(ev.data)
                    login.scram_stage = 2
                    self._send(conn, C.sasl_response(b""))
                return
            if scram is not None and login.scram_stage != 2:
                scram.verify(ev.data)
        except C.ScramError as exc:
            self._login_done(conn, Reply("fail", protocol.ERR_TRANSPORT, exc.condition, {"text": str(exc)}))
            if isinstance(ev, C.SaslSuccess):  # the server thinks we are in: do not keep that stream
                self._send(conn, C.stream_close(self.ws))
                conn.by_client = True
            else:
                self._send(conn, f"<abort xmlns='{C.NS_SASL}'/>")
            return
        # success: restart the stream (the codec has reset itself). Pipelined (one write): the new
        # stream header, the bind request and, when this target's last restarted stream needed
        # no <session/>, the initial presence; the features that come back are still checked.
        conn.authed = True
        login.step = "restart"
        header = C.stream_header(self.domain, self.ws)
        if not self.pipeline:
            self._send(conn, header)  # the bind waits for the new features
            return
        login.iq_id = f"b{next(self._ids)}"
        bind = C.bind(login.iq_id, login.resource)
        if _POST_AUTH_HINTS.get(self._hint_key(conn)):
            login.presence_sent = True
            self._send(conn, header, bind, C.presence())
        else:
            self._send(conn, header, bind)

    def _on_iq(self, conn: _Conn, ev: Any) -> None:
        login = conn.login
        if login is not None and ev.id is not None and ev.id == login.iq_id:
            if isinstance(ev, C.IqError):
                step = "bind" if login.step == "restart" else login.step
                code, desc = C.map_condition(step, ev.condition)
                self._login_done(conn, Reply("fail", code, desc, {"text": ev.text} if ev.text else None))
                return
            if login.step == "bind" or login.step == "restart":
                login.jid = ev.jid
                feats = conn.features
                if feats is not None and feats.session and not feats.session_optional:
                    login.step = "session"
                    login.iq_id = f"s{next(self._ids)}"
                    self._send(conn, C.session(login.iq_id))
                    return
            self._login_ok(conn, login)
            return
        ar = conn.iqs.pop(ev.id, None) if ev.id is not None else None
        if ar is not None:
            ar.set(ev)

    def _login_ok(self, conn: _Conn, login: _Login) -> None:
        jid = login.jid or f"{login.user_id}@{self.domain}/{login.resource}"
        sid = f"{conn.stream_id}:{jid}"
        conn.session = sid
        if not login.presence_sent:
            self._send(conn, C.presence())
        data = {"userID": login.user_id, "sessionID": sid, "jid": jid, "streamID": conn.stream_id,
                "resource": jid.partition("/")[2] or login.resource, "sigExpireAt": login.exp}
        self._login_done(conn, Reply("ok", protocol.OK, "ok", data, sid))

    def _login_done(self, conn: _Conn, reply: Reply) -> None:
        """The server answered the login in flight: tell the sink (rule 3), then wake the caller."""
        login = conn.login
        if login is None:
            return
        conn.login = None
        login.step = "done"
        try:
            self.sink.login_answered(reply, login.user_id)
        except Exception:
            log.exception("xmpp driver: sink.login_answered raised")
        login.result.set(reply)

    def _on_stream_error(self, conn: _Conn, ev: C.StreamError) -> str:
        at = time.time_ns()
        cond, text = ev.condition, ev.text
        if conn.login is not None:
            code, desc = C.map_condition("stream", cond)
            outcome = "info" if conn.authed else "fail"
            self._login_done(conn, Reply(outcome, code, desc, {"text": text} if text else None))
        session = conn.session
        if session is not None:
            reason = None
            low = (text or "").lower()
            if cond == "conflict":
                if not text or "replaced by new connection" in low:
                    reason = "same_instance" if self.resource_shared else "multi_device"
                else:
                    reason = "rest_kick"
            elif cond == "policy-violation" and "kick" in low:
                reason = "rest_kick"
            if reason is not None:
                conn.session = None
                try:
                    self.sink.kicked(session, reason, {"condition": cond, "text": text}, at)
                except Exception:
                    log.exception("xmpp driver: sink.kicked raised")
        self._send(conn, C.stream_close(self.ws))
        return f"error:{cond}"

    # --------------------------------------------------------------- teardown

    def _teardown(self, conn: _Conn, reason: str) -> None:
        """End ``conn`` once: close the socket, fail what waits, report a loss (not after close())."""
        if conn.down:
            return
        conn.down = True
        at = time.time_ns()
        if self._conn is conn:
            self._conn = None
        timer = conn.linger
        if timer is not None:
            conn.linger = None
            timer.close()
        io = conn.io
        if io is not None:
            conn.io = None
            io.stop()
            io.close()
        bye = conn.goodbye
        if bye is not None:
            bye.set()
        reader = conn.reader
        if reader is not None and reader is not gevent.getcurrent() and not reader.dead:
            reader.kill(block=False)
        try:
            conn.sock.close()
        except OSError:
            pass
        by_client = conn.by_client
        desc = "connection closed by client" if by_client else f"{_LOST} ({reason})"
        login = conn.login
        if login is not None:
            conn.login = None
            login.result.set(Reply("info", protocol.ERR_TRANSPORT, desc))
        iqs, conn.iqs = conn.iqs, {}
        for ar in iqs.values():
            ar.set(desc)
        conn.session = None
        if not by_client:
            try:
                self.sink.lost(reason, at)
            except Exception:
                log.exception("xmpp driver: sink.lost raised")

    def _shutdown(self, conn: _Conn, wait_s: float, presence: bool) -> bool:
        """End ``conn`` as the client: [unavailable presence +] stream close, wait up to ``wait_s``
        for the server's close, then close the socket. True when the server said goodbye."""
        conn.by_client = True
        if self._conn is conn:
            self._conn = None
        if presence:
            self._send(conn, C.unavailable_presence(), C.stream_close(self.ws))
        else:
            self._send(conn, C.stream_close(self.ws))
        if wait_s > 0 and not conn.down:
            bye = conn.goodbye
            if bye is None:
                bye = conn.goodbye = GEvent()
            said = bye.wait(wait_s)
        else:
            said = conn.down
        
        self._teardown(conn, "closed_by_client")
        return bool(said)

    def abort(self, reason: str) -> None:
        """End the stream at once, no goodbye and no ``sink.lost`` (the SDK declared the link dead)."""
        conn = self._conn
        if conn is None:
            return
        conn.by_client = True
        self._teardown(conn, reason)

    def retarget(self, host: str, port: int) -> None:
        """Point later connects at ``host:port`` (the conformance suite's silent server)."""
        self.host, self.port, self._addrs = host, int(port), None

    def close(self) -> None:
        """Send the stream close and return at once; the reader waits (at most CLOSE_WAIT_S, in
        the background) for the server's close, then closes the socket. Idempotent."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        conn.by_client = True
        self._send(conn, C.stream_close(self.ws))
        login = conn.login
        if login is not None:
            conn.login = None
            login.result.set(Reply("info", protocol.ERR_TRANSPORT, "connection closed by client"))
        iqs, conn.iqs = conn.iqs, {}
        for ar in iqs.values():
            ar.set("connection closed by client")
        conn.session = None
        reader = conn.reader
        if conn.down:
            return
        if conn.plain:  # the read watcher waits for the server's close, at most CLOSE_WAIT_S
            timer = gevent.get_hub().loop.timer(CLOSE_WAIT_S)
            timer.start(self._linger_over, conn, update=True)
            conn.linger = timer
        elif reader is not None and not reader.dead and reader is not gevent.getcurrent():
            timer = gevent.get_hub().loop.timer(CLOSE_WAIT_S)
            timer.start(reader.kill, gevent.GreenletExit, False, update=True)
            conn.linger = timer
        else:
            self._teardown(conn, "closed_by_client")

    # --------------------------------------------------------------- requests

    def login(self, user_id: str, credential: str, platform: str, instance_id: str, timeout: float) -> Reply:
        """Log ``user_id`` in (see the module docstring); ``timeout`` seconds for the whole exchange.

        While it runs (old stream closed, new one opened, SASL, restart, bind) no other stanza
        may go out: RFC 6120 allows none before bind, and ejabberd answers a ping sent between
        ``<success/>`` and the new stream header with a stream error. :meth:`heartbeat` waits."""
        if not self._idle.is_set():
            return Reply("fail", protocol.ERR_SDK_ACCOUNT_LOGIN_IN_PROCESS, "login in process")
        self._idle.clear()
        try:
            return self._login(user_id, credential, platform, instance_id, timeout)
        finally:
            self._idle.set()

    def _login(self, user_id: str, credential: str, platform: str, instance_id: str, timeout: float) -> Reply:
        deadline = time.monotonic() + timeout
        exp = token_exp(credential) if looks_like_jwt(credential) else None
        if exp is not None and exp < time.time():
            return Reply("fail", protocol.ERR_USER_SIG_EXPIRED, "token expired before sending")
        conn = self._conn
        if conn is not None and conn.login is not None:
            return Reply("fail", protocol.ERR_SDK_ACCOUNT_LOGIN_IN_PROCESS, "login in process")
        if conn is not None and (conn.down or conn.session is not None or conn.authed):
            if not conn.down:
                self._shutdown(conn, min(SWITCH_CLOSE_WAIT_S, timeout / 4), presence=conn.session is not None)
            conn = None
        if conn is None:
            if not self._used:
                return Reply("fail", protocol.ERR_TRANSPORT, _NOT_CONNECTED)
            verdict = self.connect(deadline)
            if verdict is not None:
                return Reply(verdict[0], protocol.ERR_TRANSPORT, f"reconnect: {verdict[1]}")
            conn = self._conn
            if conn is None:
                return Reply("info", protocol.ERR_TRANSPORT, _LOST)
        offered = conn.features.mechanisms if conn.features is not None else ()
        mech = C.choose_mechanism(self.mechanism, offered, plain_only=exp is not None)
        if mech is None:
            return Reply("fail", protocol.ERR_SVR_ACCOUNT_INVALID_PARAMETERS, "invalid-mechanism",
                         {"text": f"{self.mechanism} not offered (server offers {', '.join(offered) or 'none'})"})
        username = user_id.partition("@")[0] if "@" in user_id else user_id
        if mech == "PLAIN":
            scram = None
            initial = C.plain_initial(username, credential)
        else:
            scram = C.ScramClient(mech, username, credential)
            initial = scram.first()
        self.last_mechanism = mech
        login = _Login(user_id, mech, scram, instance_id, exp)
        conn.login = login
        sent = self._send(conn, C.auth(mech, initial))
        if sent is not None:
            if conn.login is login:
                conn.login = None
            return Reply(sent[0], protocol.ERR_TRANSPORT, sent[1])
        login.result.wait(max(0.0, deadline - time.monotonic()))
        if not login.result.ready():
            if conn.login is login:
                conn.login = None
            self._shutdown(conn, 0.0, presence=False)  # no late session behind the SDK's back
            return Reply("info", protocol.ERR_TRANSPORT, f"timeout after {timeout:g} s")
        reply = login.result.value
        if reply.outcome != "ok" and conn.by_client and not conn.down:
            self._teardown(conn, "closed_by_client")  # e.g. SCRAM signature mismatch: stream abandoned
        return reply

    def logout(self, timeout: float) -> Reply:
        """Unavailable presence + stream close; ok 0 once the server closed (see the module docstring)."""
        conn = self._conn
        if conn is None or conn.down or conn.session is None:
            return Reply("fail", protocol.ERR_SDK_NOT_LOGGED_IN, "not logged in")
        held = conn.session
        said = self._shutdown(conn, timeout, presence=True)
        if said:
            return Reply("ok", protocol.OK, "ok", None, held)
        return Reply("info", protocol.ERR_TRANSPORT, f"timeout after {timeout:g} s", None, held)

    def heartbeat(self, timeout: float) -> Reply:
        """XEP-0199 ping to the domain; ok 0 on any iq answer. Waits (within ``timeout``) for a
        login in flight to finish; before bind there is nothing to ping with: fail 6014."""
        t0 = time.monotonic()
        if not self._idle.wait(timeout):
            return Reply("info", protocol.ERR_TRANSPORT, f"timeout after {timeout:g} s (login in flight)")
        left = max(0.0, timeout - (time.monotonic() - t0))
        conn = self._conn
        if conn is None or conn.down:
            return Reply("fail", protocol.ERR_TRANSPORT, _NOT_CONNECTED)
        if conn.session is None:
            return Reply("fail", protocol.ERR_SDK_NOT_LOGGED_IN, "not logged in (XMPP: no stanza before bind)")
        iq_id = f"p{next(self._ids)}"
        ar: AsyncResult = AsyncResult()
        conn.iqs[iq_id] = ar
        held = conn.session
        sent = self._send(conn, C.ping(iq_id, self.domain))
        if sent is not None:
            conn.iqs.pop(iq_id, None)
            return Reply(sent[0], protocol.ERR_TRANSPORT, sent[1], None, held)
        ar.wait(left)
        if not ar.ready():
            conn.iqs.pop(iq_id, None)
            return Reply("info", protocol.ERR_TRANSPORT, f"timeout after {timeout:g} s", None, held)
        value = ar.value
        if isinstance(value, str):
            return Reply("info", protocol.ERR_TRANSPORT, value, None, held)
        desc = value.condition if isinstance(value, C.IqError) else "ok"
        return Reply("ok", protocol.OK, desc, {"serverTime": None}, held)

    def __repr__(self) -> str:
        conn = self._conn
        return (f"XmppDriver({self.transport}://{self.host}:{self.port} domain={self.domain!r}, "
                f"connected={self.connected}, session={conn.session if conn else None!r})")
