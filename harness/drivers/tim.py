"""The ``tim`` driver: PROTOCOL.md (JSON frames over WebSocket ``/ws``) on non-blocking OS
sockets driven by gevent's event loop, no reader greenlet, no threads.

The hot path is kept lean (it is what a load generator spends its CPU on, and what a held
session costs in memory):

* an IP-literal target is connected to without a resolver call; the socket is a plain
  non-blocking ``_socket.socket`` (no gevent socket wrapper); on loopback the TCP handshake
  is usually done when ``connect`` returns, so the upgrade request goes out at once;
* the opening handshake is built and checked by hand (``harness.drivers.websocket``), frames
  by :mod:`harness.drivers.wsframe` (masked text/close/pong out, an RFC-checking decoder in);
* the server's frames are read by an I/O watcher callback that runs in the hub when the
  socket is readable (one ``recv_into`` into a process-wide buffer): a held connection costs a
  socket, a watcher and a few small objects, not a greenlet with its saved stack;
* close() sends the close frame and returns; the watcher reads the server's close reply in
  the background (bounded by a timer), then closes the socket.

Requests are pipelined by ``seq``: a call registers a waiter, sends its frame and waits; the
reader resolves waiters in wire order and tells the SDK about a login's answer
(``sink.login_answered``) before it handles the next frame, so an event that follows a
response on the wire is always applied after it. Sink callbacks (events, ``lost``) run in the
hub, so they must not block (the driver contract says so for every driver).
"""
from __future__ import annotations

import base64
import errno
import functools
import json
import logging
import os
import time
from _json import encode_basestring_ascii as _q
from time import monotonic as _monotonic
from _socket import IPPROTO_TCP, SOCK_STREAM, SOL_SOCKET, SO_ERROR, TCP_NODELAY
from _socket import socket as _rawsocket
from typing import Any, ClassVar

import gevent
from gevent.hub import Waiter
from gevent.lock import Semaphore
from gevent.socket import wait_write

from harness import protocol
from harness.drivers.websocket import (MAX_HANDSHAKE_BYTES, RECV_CHUNK, Addresses, accept_token,
                                       check_upgrade_response, parse_ws_url, resolve_addresses)
from harness.drivers.wsframe import (OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, OP_PONG, FrameError, FrameReader,
                                     client_frame, close_frame, random_bytes, random_key)
from harness.sdk.driver import Reply, Sink

__all__ = ["TimDriver", "MAX_MESSAGE_BYTES", "CLOSE_WAIT_S"]

#: The C scanner json.loads runs (``json.loads`` = this at index 0 + "only whitespace after it").
_scan = json.decoder.JSONDecoder().scan_once

try:  # parses an answer ~2.5x faster than the stdlib, from the receive buffer (validating UTF-8)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is in requirements.txt
    _fast_loads = None


def _exact(d: dict) -> bool:
    """True when nothing in ``d`` (nested) is a float. What orjson accepts, json.loads accepts
    too and gives the same values for, except numbers: orjson turns an integer beyond 64 bits
    into a float (and rounds floats its own way), so a parse with a float in it is redone by
    the stdlib (answers carry no floats: this never happens with a well-behaved server)."""
    return _exact_list(d.values())


def _response_fields(obj: dict) -> tuple | None:
    """``(seq, code, desc, data)`` of a well-formed response object (protocol.parse_server_frame's
    field checks), None when it is not one."""
    seq = obj.get("seq")
    code = obj.get("code")
    desc = obj.get("desc", "")
    data = obj.get("data")
    if type(seq) is int and type(code) is int and (type(desc) is str or desc is None) and \
            (data is None or type(data) is dict):
        return seq, code, desc or "", data
    return None


def _exact_list(items: Any) -> bool:
    """True when no value of ``items`` (a list or a dict's values), nested, is a float."""
    for v in items:
        t = type(v)
        if t is float:
            return False
        if t is dict:
            if not _exact_list(v.values()):
                return False
        elif t is list:
            if not _exact_list(v):
                return False
    return True

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20  # a server message larger than this closes the connection (1009)
CLOSE_WAIT_S = 2.0  # after close(): how long the reader waits (in the background) for the server's close reply, s
RTIMER_MAX_S = 1.0  # a connection's request timer wakes at least this often while calls wait, s

CODE_TRANSPORT: int = protocol.ERR_TRANSPORT  # -1
LOST = "connection lost"
NOT_CONNECTED = "not connected"

#: One receive buffer for every connection of the process: watcher callbacks run one at a time
#: in the hub and copy out what they read before they return.
_RBUF = bytearray(RECV_CHUNK)
_RVIEW = memoryview(_RBUF)
_EAGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINPROGRESS, errno.ENOTCONN)


#: The first two bytes of a masked text frame of n < 126 payload bytes (FIN, opcode 1, MASK, n).
_TEXT_HEADS = tuple(bytes((0x81, 0x80 | n)) for n in range(126))
_from = int.from_bytes
#: payload length n -> (R, M): a 4-byte key k as a little-endian int repeated over n bytes is
#: ``k * R & M`` (R = 1 + 2**32 + 2**64 + ..., M = 2**(8n) - 1): the mask as one int, no bytes
_MASKS: dict[int, tuple[int, int]] = {}


def _masks(n: int) -> tuple[int, int]:
    words = (n + 3) >> 2
    m = (((1 << (32 * words)) - 1) // 0xFFFFFFFF, (1 << (8 * n)) - 1)
    if len(_MASKS) < 4096:
        _MASKS[n] = m
    return m


def _text_frame_ascii(text: str) -> bytes:
    """A masked text frame for an ASCII-only ``text`` (the request encoders escape to ASCII):
    the payload XOR the repeated key in one big-integer operation (RFC 6455 5.3)."""
    payload = text.encode("ascii")
    n = len(payload)
    if n >= 65536:
        return client_frame(OP_TEXT, payload)
    rep, ones = _MASKS.get(n) or _masks(n)
    key = random_key()
    masked = (_from(payload, "little") ^ (key * rep & ones)).to_bytes(n, "little")
    if n < 126:  # every request but a login with long fields: header from the table
        return _TEXT_HEADS[n] + key.to_bytes(4, "little") + masked
    return bytes((0x81, 0xFE, n >> 8, n & 0xFF)) + key.to_bytes(4, "little") + masked


class _Link:
    """One TCP connection: the socket, its read watcher, the frame decoder, the send lock.

    ``driver`` is the TimDriver while this is its current connection; None once close() handed
    it over (it then only waits for the server's close reply or EOF, bounded by ``timer``) or
    it was torn down."""

    __slots__ = ("sock", "fd", "io", "reader", "driver", "lock", "timer", "done", "loop", "rtimer", "rdue")

    def __init__(self, sock: Any, driver: "TimDriver") -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.io: Any = None
        self.reader = FrameReader(MAX_MESSAGE_BYTES)
        self.driver: TimDriver | None = driver
        self.lock: Semaphore | None = None  # made when a send has to wait for the socket
        self.timer: Any = None
        self.done = False
        self.loop: Any = None  # the hub's event loop (looked up once per connection, not per request)
        #: the request timer: one loop timer for every call waiting on this connection, armed for
        #: the earliest deadline (``rdue``, time.monotonic() s) while calls wait; None when idle
        self.rtimer: Any = None
        self.rdue = 0.0

    def start(self, rest: bytes, io: Any = None, loop: Any = None) -> None:
        """Read from the hub from now on: ``io`` a stopped read watcher of the socket to reuse
        (default: a new one) of ``loop`` (default: the current hub's)."""
        loop = self.loop = loop if loop is not None else gevent.get_hub().loop
        if io is None:
            io = loop.io(self.fd, 1)
        self.io = io
        io.start(self.on_readable)
        if rest:  # frames that came glued to the 101: handled from the hub, like any others
            loop.run_callback(self.on_data, rest)

    def on_readable(self) -> None:
        if self.done:
            return
        try:
            n = self.sock.recv_into(_RBUF)
        except BlockingIOError:
            return
        except OSError as exc:
            self.on_end(f"error:{type(exc).__name__}")
            return
        if not n:
            self.on_end("closed_by_server", eof=True)
            return
        # The common read on a held connection: exactly one whole, final, unmasked text frame
        # (an answer) and nothing buffered. Decoded from the buffer with the checks the reader
        # would make (b0 0x81: FIN, no RSV bit, text; minimal length; UTF-8), and the answer's
        # waiter woken at once: nothing follows it in this read. Anything else: the reader.
        driver = self.driver
        if n > 2 and _RBUF[0] == 0x81 and driver is not None and not self.reader.pending:
            size = _RBUF[1]
            if size < 126:
                head = 2
            elif size == 126 and n > 4:
                size = (_RBUF[2] << 8) | _RBUF[3]
                head = 4 if size >= 126 else 0  # a non-minimal length: the reader refuses it
            else:
                head = 0
            if head and head + size == n:
                try:  # an answer, parsed from the buffer: see _exact for why a float sends it on
                    obj = _fast_loads(_RVIEW[head:n])  # type: ignore[misc]
                except Exception:  # not JSON for orjson (or bad UTF-8, or no orjson): see below
                    obj = None
                try:
                    if type(obj) is dict and "event" not in obj and driver._on_answer(obj):
                        return
                    try:
                        text = str(_RVIEW[head:n], "utf-8")
                    except UnicodeDecodeError:
                        pass  # the reader answers it (1007)
                    else:
                        driver._on_frame(text, True)
                        return
                except Exception as exc:  # a bug here must still end the connection cleanly
                    log.exception("client %s: reader failed", driver.conn_id)
                    self.on_end(f"error:{type(exc).__name__}")
                    return
        self.on_data(bytes(_RVIEW[:n]))

    def on_data(self, data: bytes) -> None:
        if self.done:
            return
        driver = self.driver
        try:
            frames = self.reader.feed(data)
        except FrameError as exc:
            if driver is None:
                self.finish()
                return
            driver.close_code = exc.code
            self.send_control(close_frame(exc.code, "message too big" if exc.code == 1009 else "protocol error"))
            self.on_end("error:MessageTooBig" if exc.code == 1009 else "error:ProtocolError")
            return
        if driver is None:  # handed over by close(): only the server's close reply matters
            for op, _payload in frames:
                if op == OP_CLOSE:
                    self.finish()
                    return
            return
        try:
            for op, payload in frames:
                if self.driver is not driver:  # close()/abort() from a callback: ignore the rest
                    if op == OP_CLOSE:
                        self.finish()
                    continue
                if op == OP_TEXT:
                    driver._on_frame(payload)  # type: ignore[arg-type]
                elif op == OP_PING:
                    self.send_control(client_frame(OP_PONG, payload))  # type: ignore[arg-type]
                elif op == OP_CLOSE:
                    code, reason = payload  # type: ignore[misc]
                    driver.close_code = code
                    self.send_control(close_frame(code, reason))  # answer the server's close
                    self.on_end("closed_by_server")
                    return
                elif op == OP_BINARY:
                    log.debug("client %s: ignored a binary message", driver.conn_id)
        except Exception as exc:  # a bug here must still end the connection cleanly
            log.exception("client %s: reader failed", driver.conn_id)
            self.on_end(f"error:{type(exc).__name__}")

    def on_end(self, reason: str, eof: bool = False) -> None:
        """The transport ended (EOF, error, the server's close, a violation we answered)."""
        driver = self.driver
        if driver is not None and driver._link is self:
            if eof:
                driver.close_code = 1006
            driver._teardown(f"{LOST} ({reason})")
            sink = driver.sink
            if sink is not None:
                sink.lost(reason, time.time_ns())
        self.finish()

    def finish(self) -> None:
        """Stop reading and close the socket (idempotent)."""
        if self.done:
            return
        self.done = True
        self.driver = None
        io, self.io = self.io, None
        if io is not None:
            io.stop()
            io.close()
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.close()
        self.stop_rtimer()
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------ request timer
    def arm(self, due: float) -> None:
        """(Re-)arm the request timer for ``due`` (time.monotonic() s), or for RTIMER_MAX_S
        from now if that comes first: a connection that went idle drops its timer (~0.2 KiB)
        within that time, not a whole request timeout later."""
        timer = self.rtimer
        if timer is not None:
            timer.close()
        now = _monotonic()
        delay = due - now
        delay = RTIMER_MAX_S if delay > RTIMER_MAX_S else (delay if delay > 0.0 else 0.0)
        self.rdue = now + delay
        timer = self.rtimer = self.loop.timer(delay)
        timer.start(self.on_rtimer, update=True)  # see _wait_readable

    def stop_rtimer(self) -> None:
        timer, self.rtimer = self.rtimer, None
        if timer is not None:
            timer.close()

    def on_rtimer(self) -> None:
        """(hub) The earliest deadline came: the driver times out what is due and re-arms."""
        self.stop_rtimer()
        driver = self.driver
        if driver is not None and driver._link is self:
            driver._expire_due(self)

    # ------------------------------------------------------------------ sending
    def send(self, data: bytes) -> None:
        """Send all of ``data`` from a greenlet (waits for the socket when it has to); raises OSError."""
        lock = self.lock
        if lock is None or not lock.locked():
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            if n == len(data):
                return
            data = data[n:]
            if lock is None:
                lock = self.lock = Semaphore(1)
        with lock:
            self._send_rest(data)

    def send_control(self, data: bytes) -> None:
        """Send a control frame from the hub (never waits: a rest that does not fit goes out from
        a greenlet, after any send in progress); errors are ignored (the reader notices loss)."""
        if self.done:
            return
        lock = self.lock
        if lock is None or not lock.locked():
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                return
            if n == len(data):
                return
            data = data[n:]
            if lock is None:
                lock = self.lock = Semaphore(1)
            lock.acquire(blocking=False)  # free: nobody was sending; keeps later sends behind this rest
            gevent.spawn(self._send_rest_release, lock, data)
        else:
            gevent.spawn(self._send_locked, lock, data)

    def _send_rest(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.done:
                raise OSError(errno.EBADF, "connection closed")
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                try:
                    wait_write(self.fd, 1.0)  # re-checks ``done`` at least every second
                except TimeoutError:
                    pass
                continue
            view = view[n:]

    def _send_rest_release(self, lock: Semaphore, data: bytes) -> None:
        try:
            self._send_rest(data)
        except OSError:
            pass
        finally:
            lock.release()

    def _send_locked(self, lock: Semaphore, data: bytes) -> None:
        with lock:
            try:
                self._send_rest(data)
            except OSError:
                pass


def _open(addrs: Addresses, deadline: float, source_address: str | None, request: bytes) -> Any:
    """A non-blocking TCP socket to the first of ``addrs`` that answers, ``request`` sent on it;
    raises the last ``OSError`` (a ``TimeoutError`` when the deadline passes)."""
    last: OSError | None = None
    for family, sockaddr in addrs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("connect timed out")
        sock = _rawsocket(family, SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
            if source_address:
                sock.bind((source_address, 0))
            err = sock.connect_ex(sockaddr)
            if err and err not in _EAGAIN:
                raise OSError(err, os.strerror(err))
            # On loopback the TCP handshake is usually complete already: try the send first.
            try:
                n = sock.send(request)
            except OSError as exc:
                if exc.errno not in _EAGAIN:
                    raise
                wait_write(sock.fileno(), max(0.0, deadline - time.monotonic()))
                err = sock.getsockopt(SOL_SOCKET, SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err)) from None
                n = 0
            view = memoryview(request)[n:]
            while view:
                try:
                    view = view[sock.send(view):]
                except BlockingIOError:
                    wait_write(sock.fileno(), max(0.0, deadline - time.monotonic()))
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


#: The last 101 answer check_upgrade_response accepted, split around its Sec-WebSocket-Accept
#: value: a server answers every upgrade with the same bytes but that token.
_ACCEPTED_101: list[tuple[bytes, bytes]] = []


def _judge_101(head: bytes, key: bytes) -> tuple[str, str] | None:
    """``check_upgrade_response(head, key)``, with a shortcut: an answer that is byte for byte
    the last accepted one with this key's accept token in place of that one's parses the same
    but for that token (the right one now), so the full check would accept it too."""
    token = accept_token(key)
    if _ACCEPTED_101:
        prefix, suffix = _ACCEPTED_101[0]
        if len(head) == len(prefix) + len(token) + len(suffix) and head.startswith(prefix) \
                and head.endswith(suffix) and head[len(prefix):len(head) - len(suffix)] == token:
            return None
    verdict = check_upgrade_response(head, key)
    if verdict is None and head.count(token) == 1:  # the token is exactly the header's value
        at = head.index(token)
        _ACCEPTED_101[:] = [(head[:at], head[at + len(token):])]
    return verdict


def _wait_readable(io: Any, hub: Any, timeout: float) -> bool:
    """Park until ``io``'s fd is readable (True) or ``timeout`` s passed (False): the read watcher
    and a raw loop timer wake one ``Waiter`` (gevent's ``wait_read`` makes a ``Timeout`` object
    and a new watcher per wait: ~5 % of a connect+login+close flow here)."""
    waiter = Waiter(hub)
    switch = waiter.switch
    timer = hub.loop.timer(timeout if timeout > 0 else 0.0)
    io.start(switch, True)
    # update=True: the loop's idea of now is the start of its current iteration, stale by whatever
    # ran since (a CPU-bound stretch of Python, other greenlets): a timer started on it would fire
    # that much early, and a 2 s handshake wait after 2.3 s of busy work would time out at once
    timer.start(switch, False, update=True)
    try:
        return waiter.get()
    finally:  # the first wake resumes us at once (from the hub): the other one cannot come after this
        io.stop()
        timer.close()


def _read_101(sock: Any, key: bytes, deadline: float, io: Any, hub: Any) -> tuple[tuple[str, str] | None, bytes]:
    """The server's answer to the upgrade request: ``(None, bytes after it)`` when it accepted,
    else ``((outcome, desc), b"")`` (see ``check_upgrade_response``). ``io``: a read watcher of
    the socket (stopped when this returns)."""
    buf = b""
    waited = False
    while True:
        if not waited:  # the request just left: the answer cannot be there yet
            waited = True
            if not _wait_readable(io, hub, deadline - time.monotonic()):
                return ("info", "timeout: handshake"), b""
        try:
            n = sock.recv_into(_RBUF)
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _wait_readable(io, hub, remaining):
                return ("info", "timeout: handshake"), b""
            continue
        if not n:
            return ("fail", "handshake: connection closed by server"), b""
        at = len(buf)
        buf += _RVIEW[:n]
        end = buf.find(b"\r\n\r\n", max(0, at - 3))
        if end >= 0:
            return _judge_101(buf[:end], key), buf[end + 4:]
        if len(buf) > MAX_HANDSHAKE_BYTES:
            return ("fail", f"handshake: the server's answer exceeds {MAX_HANDSHAKE_BYTES} bytes"), b""


class TimDriver:
    """One WebSocket connection speaking PROTOCOL.md. See :mod:`harness.sdk.driver` for the rules.

    ``addresses``: where to connect, ``[(family, sockaddr), ...]`` (callers that make many
    connections to one URL resolve it once); default: resolved on the first connect() and kept.
    """

    protocol: ClassVar[str] = "tim"
    capabilities: ClassVar[frozenset[str]] = frozenset({"status", "expiry_push", "switch_in_place",
                                                        "heartbeat_logged_out"})

    __slots__ = ("url", "sdk_app_id", "sink", "source_address", "conn_id", "close_timeout", "close_code",
                 "_host", "_port", "_target", "_host_header", "_addrs", "_link", "_pending", "_seq", "_req_head",
                 "_login_head")

    def __init__(self, url: str, *, sdk_app_id: int, sink: Sink | None = None, source_address: str | None = None,
                 conn_id: str = "", addresses: Addresses | None = None, close_timeout: float = CLOSE_WAIT_S) -> None:
        self._host, self._port, self._target, self._host_header = parse_ws_url(url)
        self._addrs: Addresses | None = (addresses if isinstance(addresses, tuple) else tuple(addresses)) if addresses \
            else None
        self.url = url
        self.sdk_app_id = sdk_app_id
        self.sink = sink
        self.source_address = source_address
        self.conn_id = conn_id
        self.close_timeout = close_timeout
        self.close_code: int | None = None
        self._link: _Link | None = None
        #: seq -> (op, waiter, user_id, deadline as time.monotonic() s) of the calls waiting for
        #: their answer; None when there is none (a held connection between requests carries no dict)
        self._pending: dict[int, tuple[str, Waiter, str, float]] | None = None
        self._seq = 0
        self._req_head = b""
        self._login_head = ""

    @property
    def connected(self) -> bool:
        return self._link is not None

    def retarget(self, host: str, port: int) -> None:
        """Point later connects at ``host:port`` (same path); the conformance suite's silent server."""
        self._host, self._port, self._addrs = host, port, None
        self._host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._req_head = b""

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "url": self.url, "transport": "ws"}

    # ---------------------------------------------------------------- connect
    def connect(self, deadline: float) -> tuple[str, str] | None:
        """TCP connect + WebSocket handshake; starts reading. None, or ``(outcome, desc)``:
        ``fail`` when it certainly did not connect, ``info`` on a timeout."""
        sock = None
        key = base64.b64encode(random_bytes(16))
        head = self._req_head
        if not head:  # the upgrade request up to the key (RFC 6455 4.1; see websocket.upgrade_request)
            head = self._req_head = _request_head(self._target, self._host_header)
        io = None
        try:
            addrs = self._addrs
            if addrs is None:
                addrs = self._addrs = resolve_addresses(self._host, self._port)
            sock = _open(addrs, deadline, self.source_address, head + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
            hub = gevent.get_hub()
            io = hub.loop.io(sock.fileno(), 1)  # waits for the 101 here, then reads the frames (_Link)
            outcome, rest = _read_101(sock, key, deadline, io, hub)
        except TimeoutError as exc:
            outcome = ("info", f"timeout: {type(exc).__name__}")
        except OSError as exc:
            outcome = ("fail", f"{type(exc).__name__}: {exc.strerror or exc}")
        except BaseException:  # killed (GreenletExit) mid-connect: do not leak the socket
            if io is not None:
                io.close()
            if sock is not None:
                sock.close()
            raise
        if outcome is not None:
            if io is not None:
                io.close()
            if sock is not None:
                sock.close()
            return outcome
        self._seq = 0
        self._pending = None
        self.close_code = None
        link = self._link = _Link(sock, self)
        link.start(rest, io, hub.loop)
        return None

    # --------------------------------------------------------------- requests
    def login(self, user_id: str, credential: str, platform: str, instance_id: str, timeout: float) -> Reply:
        # the same text as protocol.encode_login (json.dumps, compact, ASCII-escaped), without the dict
        head = self._login_head
        if not head:
            head = self._login_head = _login_head(self.sdk_app_id)
        return self._call("login", '{"cmd":"login","seq":', head + ',"userID":' + _q(user_id) + ',"userSig":'
                          + _q(credential) + ',"platform":' + _q(platform) + ',"instanceID":' + _q(instance_id) + "}",
                          timeout, user_id)

    def logout(self, timeout: float) -> Reply:
        return self._call("logout", '{"cmd":"logout","seq":', "}", timeout)

    def status(self, timeout: float) -> Reply:
        return self._call("status", '{"cmd":"status","seq":', "}", timeout)

    def heartbeat(self, timeout: float) -> Reply:
        return self._call("heartbeat", '{"cmd":"heartbeat","seq":', "}", timeout)

    def _call(self, op: str, before_seq: str, after_seq: str, timeout: float, user_id: str = "") -> Reply:
        link = self._link
        if link is None:
            return Reply("fail", CODE_TRANSPORT, NOT_CONNECTED)
        self._seq += 1
        seq = self._seq
        waiter = Waiter()
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        due = _monotonic() + timeout
        pending[seq] = (op, waiter, user_id, due)
        frame = _text_frame_ascii(before_seq + str(seq) + after_seq)
        try:
            link.send(frame)
        except OSError as exc:
            # "info": part of the frame may have reached the wire
            if self._pending is pending:
                pending.pop(seq, None)
            return Reply("info", CODE_TRANSPORT, f"send: {type(exc).__name__}")
        # The link's request timer (a raw loop timer, not a gevent Timeout per call), armed for
        # the earliest deadline (at most RTIMER_MAX_S ahead): whoever pops the pending entry
        # first (the reader, the timer, a teardown) is the only one that wakes the waiter, from
        # the hub. A held connection's calls share it: no timer made and closed per request.
        if link.rtimer is None or due < link.rdue:
            link.arm(due)
        resp = waiter.get()
        if resp is None:
            return Reply("info", CODE_TRANSPORT, f"timeout after {timeout:g} s")
        if isinstance(resp, str):  # connection lost / closed while waiting
            return Reply("info", CODE_TRANSPORT, resp)
        return resp

    def _expire_due(self, link: _Link) -> None:
        """(hub, ``link``'s request timer) Wake every call whose deadline has passed with None
        (a timeout), then re-arm the timer for the earliest deadline left, if any."""
        pending = self._pending
        if pending:
            now = _monotonic()
            late = [(seq, entry[1]) for seq, entry in pending.items() if entry[3] <= now]
            for seq, _waiter in late:
                del pending[seq]
            if not pending and self._pending is pending:
                self._pending = None
            for _seq, waiter in late:
                waiter.switch(None)  # the caller may make new calls (and arm the timer) meanwhile
        pending = self._pending
        if pending and self._link is link:
            due = min(entry[3] for entry in pending.values())
            if link.rtimer is None or due < link.rdue:
                link.arm(due)

    # ----------------------------------------------------------------- reader
    def _on_answer(self, obj: dict) -> bool:
        """A response parsed by orjson, alone in its read (see _Link.on_readable): handled when
        it is well formed (the checks of _on_frame's fast path) and exact (no float anywhere,
        see _exact); False: nothing was done, the frame goes the stdlib's way."""
        fields = _response_fields(obj)
        if fields is not None:
            data = fields[3]
            try:
                exact = data is None or _exact(data)
            except RecursionError:  # nested deeper than Python recurses: the stdlib's way decides
                exact = False
            if exact:
                self._on_response(*fields, True)
                return True
        return False

    def _on_frame(self, text: str, alone: bool = False) -> None:
        """One text message from the server. ``alone``: the only frame of this read, handled in
        the hub's I/O callback (an answer's waiter may be woken at once, see _on_response)."""
        # Fast path for the common frame, a well-formed response: the stdlib's C scanner (what
        # json.loads runs) on the whole text and the same field checks as
        # protocol.parse_server_frame, without its objects. Anything else (an event, a bad or
        # odd frame, whitespace around the object) takes the general path, which re-parses.
        try:
            obj, end = _scan(text, 0)
        except Exception:  # StopIteration (not JSON at 0), ValueError, RecursionError
            obj = end = None
        if end == len(text) and type(obj) is dict and "event" not in obj:
            fields = _response_fields(obj)
            if fields is not None:
                self._on_response(*fields, alone)
                return
        msg = protocol.parse_server_frame(text)
        if isinstance(msg, protocol.Response):
            self._on_response(msg.seq, msg.code, msg.desc, msg.data)
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

    def _on_response(self, seq: Any, code: int, desc: str, data: dict | None, alone: bool = False) -> None:
        pending = self._pending
        entry = pending.pop(seq, None) if pending is not None and isinstance(seq, int) else None
        if not pending:
            self._pending = None  # no dict while nothing waits (an emptied one keeps its table)
        if entry is None:
            log.debug("client %s: response for unknown seq %r", self.conn_id, seq)
            return
        op, waiter, user_id, _due = entry
        if op == "login" or op == "status":
            session = data.get("sessionID") if data else None
            session = session if isinstance(session, str) else None
        else:
            session = None
        reply = Reply("ok" if code == 0 else "fail", code, desc, data, session)
        if op == "login" and self.sink is not None:
            self.sink.login_answered(reply, user_id)
        if alone:  # nothing follows in this read: resume the caller now (we are the hub)
            waiter.switch(reply)
            return
        link = self._link
        (link.loop if link is not None else gevent.get_hub().loop).run_callback(waiter.switch, reply)  # after this batch

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Send the WS close and end the connection (idempotent); returns at once.

        The watcher reads the server's close reply in the background (at most
        ``close_timeout`` s), then closes the socket. Pending calls end with info -1."""
        link = self._link
        if link is None:
            return
        link.send_control(close_frame(1000, "bye"))
        if not link.done:
            timer = link.timer = gevent.get_hub().loop.timer(self.close_timeout)
            timer.start(link.finish, update=True)  # bounds the wait for the reply
        self._teardown("connection closed by client", hand_over=True)

    def abort(self, reason: str) -> None:
        """End the connection at once, without a close frame and without ``sink.lost`` (the SDK
        gives up on a dead link itself, e.g. an unanswered heartbeat); pending calls end info."""
        if self._link is not None:
            self._teardown(f"{LOST} ({reason})")

    def _teardown(self, desc: str, hand_over: bool = False) -> None:
        """End the connection once: stop reading, close the socket, fail pending calls.

        ``hand_over`` (close() only): the link keeps reading until the server's close reply
        (or EOF, or its timer) and closes the socket itself."""
        link, self._link = self._link, None
        if link is not None:
            if hand_over:
                link.driver = None
                link.stop_rtimer()
            else:
                link.finish()
        pending, self._pending = self._pending, None
        if pending:
            run = gevent.get_hub().loop.run_callback
            for entry in pending.values():
                run(entry[1].switch, desc)


@functools.lru_cache(maxsize=64)
def _login_head(sdk_app_id: Any) -> str:
    """``,"sdkAppID":<json>`` as the protocol encoder writes it (one shared string per value)."""
    return ',"sdkAppID":' + json.dumps(sdk_app_id)


@functools.lru_cache(maxsize=64)
def _request_head(target: str, host_header: str) -> bytes:
    """The upgrade request up to the key (one shared bytes object per target)."""
    return (f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ").encode("ascii")
