"""The ``tim`` driver: PROTOCOL.md (JSON frames over WebSocket ``/ws``) on plain gevent sockets
with wsproto's frame layer (sans-IO), one reader greenlet per connection, no threads.

The hot path is kept lean (it is what a load generator spends its CPU on): an IP-literal
target is connected to without a resolver call; the opening handshake is built and checked
by hand (``harness.drivers.websocket``); close() sends the close frame and returns, the
reader waits for the server's reply in the background (bounded).

Requests are pipelined by ``seq``: a call registers a waiter, sends its frame and waits; the
reader resolves waiters in wire order and tells the SDK about a login's answer
(``sink.login_answered``) before it handles the next frame, so an event that follows a
response on the wire is always applied after it.
"""
from __future__ import annotations

import base64
import logging
import os
import time
from typing import Any, Callable, ClassVar

import gevent
from gevent import socket as gsocket
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from harness import protocol
from harness.drivers.websocket import (RECV_CHUNK, Addresses, open_socket, parse_ws_url, read_handshake,
                                       upgrade_request)
from harness.sdk.driver import Reply, Sink

__all__ = ["TimDriver", "MAX_MESSAGE_BYTES", "CLOSE_WAIT_S"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20  # a server message larger than this closes the connection (1009)
CLOSE_WAIT_S = 2.0  # after close(): how long the reader waits (in the background) for the server's close reply, s

CODE_TRANSPORT: int = protocol.ERR_TRANSPORT  # -1
LOST = "connection lost"
NOT_CONNECTED = "not connected"


class TimDriver:
    """One WebSocket connection speaking PROTOCOL.md. See :mod:`harness.sdk.driver` for the rules.

    ``addresses``: where to connect, ``[(family, sockaddr), ...]`` (callers that make many
    connections to one URL resolve it once); default: resolved on the first connect() and kept.
    """

    protocol: ClassVar[str] = "tim"
    capabilities: ClassVar[frozenset[str]] = frozenset({"status", "expiry_push", "switch_in_place",
                                                        "heartbeat_logged_out"})

    __slots__ = ("url", "sdk_app_id", "sink", "source_address", "conn_id", "close_timeout", "close_code",
                 "_host", "_port", "_target", "_host_header", "_addrs", "_sock", "_ws", "_send_lock",
                 "_reader", "_linger", "_pending", "_seq", "_parts", "_parts_len")

    def __init__(self, url: str, *, sdk_app_id: int, sink: Sink | None = None, source_address: str | None = None,
                 conn_id: str = "", addresses: Addresses | None = None, close_timeout: float = CLOSE_WAIT_S) -> None:
        self._host, self._port, self._target, self._host_header = parse_ws_url(url)
        self._addrs: Addresses | None = list(addresses) if addresses else None
        self.url = url
        self.sdk_app_id = sdk_app_id
        self.sink = sink
        self.source_address = source_address
        self.conn_id = conn_id
        self.close_timeout = close_timeout
        self.close_code: int | None = None
        self._sock: Any = None
        self._ws: Connection | None = None
        self._send_lock = Semaphore(1)
        self._reader: gevent.Greenlet | None = None
        self._linger: list = [None]  # this connection's reader's close timer (set by close())
        self._pending: dict[int, tuple[str, AsyncResult, str]] = {}
        self._seq = 0
        self._parts: list[str] | None = None
        self._parts_len = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def retarget(self, host: str, port: int) -> None:
        """Point later connects at ``host:port`` (same path); the conformance suite's silent server."""
        self._host, self._port, self._addrs = host, port, None
        self._host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "url": self.url, "transport": "ws"}

    # ---------------------------------------------------------------- connect
    def connect(self, deadline: float) -> tuple[str, str] | None:
        """TCP connect + WebSocket handshake; starts the reader. None, or ``(outcome, desc)``:
        ``fail`` when it certainly did not connect, ``info`` on a timeout."""
        sock = None
        try:
            sock, self._addrs = open_socket(self._host, self._port, self._addrs, deadline, self.source_address)
            key = base64.b64encode(os.urandom(16))
            sock.sendall(upgrade_request(self._target, self._host_header, key))
            outcome, rest = read_handshake(sock, key, deadline)
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
            return outcome
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
        self._linger = [None]
        self._reader = gevent.spawn(self._read_loop, sock, ws, self._linger)
        return None

    # --------------------------------------------------------------- requests
    def login(self, user_id: str, credential: str, platform: str, instance_id: str, timeout: float) -> Reply:
        return self._call("login", lambda seq: protocol.encode_login(seq, self.sdk_app_id, user_id, credential,
                                                                     platform, instance_id), timeout, user_id)

    def logout(self, timeout: float) -> Reply:
        return self._call("logout", lambda seq: protocol.encode_request("logout", seq), timeout)

    def status(self, timeout: float) -> Reply:
        return self._call("status", lambda seq: protocol.encode_request("status", seq), timeout)

    def heartbeat(self, timeout: float) -> Reply:
        return self._call("heartbeat", lambda seq: protocol.encode_request("heartbeat", seq), timeout)

    def _call(self, op: str, encode: Callable[[int], str], timeout: float, user_id: str = "") -> Reply:
        if self._ws is None:
            return Reply("fail", CODE_TRANSPORT, NOT_CONNECTED)
        self._seq += 1
        seq = self._seq
        ar: AsyncResult = AsyncResult()
        self._pending[seq] = (op, ar, user_id)
        sent = self._send_text(encode(seq))
        if sent is not None:
            # "fail": nothing reached the wire; "info": maybe part of it did.
            self._pending.pop(seq, None)
            return Reply(sent[0], CODE_TRANSPORT, sent[1])
        ar.wait(timeout)
        if not ar.ready():
            self._pending.pop(seq, None)
            return Reply("info", CODE_TRANSPORT, f"timeout after {timeout:g} s")
        resp = ar.value
        if isinstance(resp, str):  # connection lost / closed while waiting
            return Reply("info", CODE_TRANSPORT, resp)
        return resp

    def _send_text(self, text: str) -> tuple[str, str] | None:
        """Send one text message (greenlet-safe). None on success, else (outcome, desc)."""
        with self._send_lock:
            ws, sock = self._ws, self._sock
            if ws is None or sock is None:
                return ("fail", NOT_CONNECTED)
            try:
                data = ws.send(TextMessage(data=text))
            except LocalProtocolError:
                return ("fail", NOT_CONNECTED)
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
        """The connection's reader: handles the server's frames while ``ws`` is the current
        connection. When close() hands the connection over (``self._ws`` no longer ``ws``), it
        only reads on until the server's close reply or EOF, bounded by the timer close() put
        in ``linger[0]``, then closes the socket: the caller does not wait for it."""
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
                self._teardown(f"{LOST} ({reason})")
                sink = self.sink
                if sink is not None:
                    sink.lost(reason, time.time_ns())
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
            data = msg.data if isinstance(msg.data, dict) else None
            if op == "login" or op == "status":
                session = data.get("sessionID") if data else None
                session = session if isinstance(session, str) else None
            else:
                session = None
            reply = Reply("ok" if msg.code == 0 else "fail", msg.code, msg.desc, data, session)
            if op == "login" and self.sink is not None:
                self.sink.login_answered(reply, user_id)
            ar.set(reply)
        elif isinstance(msg, protocol.Event):
            sink = self.sink
            if sink is None:
                return
            now = time.time_ns()
            if msg.name == "kickedOffline":
                by = msg.by if isinstance(msg.by, dict) else None
                sink.kicked(msg.session_id, msg.reason or "", by, now)
            elif msg.name == "userSigExpired":
                sink.credential_expired(msg.session_id, now)
            else:
                log.debug("client %s: ignored event %r", self.conn_id, msg.name)
        else:
            log.debug("client %s: bad frame from server: %s", self.conn_id, getattr(msg, "desc", msg))

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Send the WS close and end the connection (idempotent); returns at once.

        The reader reads the server's close reply in the background (at most
        ``close_timeout`` s), then closes the socket. Pending calls end with info -1."""
        if self._ws is None:
            return
        self._send_event(CloseConnection(code=1000, reason="bye"))
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent() and not reader.dead and self._sock is not None:
            timer = gevent.get_hub().loop.timer(self.close_timeout)
            timer.start(reader.kill, gevent.GreenletExit, False)  # bounds the reader's wait for the reply
            self._linger[0] = timer
            self._teardown("connection closed by client", hand_over=True)
        else:
            self._teardown("connection closed by client")

    def abort(self, reason: str) -> None:
        """End the connection at once, without a close frame and without ``sink.lost`` (the SDK
        gives up on a dead link itself, e.g. an unanswered heartbeat); pending calls end info."""
        if self._ws is not None:
            self._teardown(f"{LOST} ({reason})")

    def _teardown(self, desc: str, hand_over: bool = False) -> None:
        """End the connection once: stop the reader, close the socket, fail pending calls.

        ``hand_over`` (close() only): the reader keeps running and closes the socket itself."""
        current = gevent.getcurrent()
        reader = self._reader
        if reader is not None and reader is not current and not reader.dead and not hand_over:
            reader.kill(block=False)
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
        for _op, ar, _user in pending.values():
            ar.set(desc)
        self._parts = None
