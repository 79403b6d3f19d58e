"""RFC 6455 duties aiohttp's server side leaves out: client frames must be masked, and a
server-initiated close must not turn into a TCP reset.

Rules (shared PROTOCOL.md section 2; RFC 6455 sections 5.1 and 7.1.1):

* Every client frame MUST be masked; the first unmasked one closes the connection with 1002.
  Frames before it are handled normally (frames strictly in order). :class:`FrameScanner`
  finds it by reading frame headers only (payload bytes are skipped by count, never looked
  at), before aiohttp's parser sees the bytes.
* When the server closes because the client broke a rule (1002/1007/1009, or the client
  never answered the close frame), the client may still be sending: closing the socket with
  unread bytes makes the kernel send RST, and the client then loses the close frame. So
  the close is *lingering*: after the close frame, half-close (FIN), read and discard until
  the client closes or ``linger_s`` passes, then close. A normal close handshake (the
  client's close frame was read) closes at once, as before.

:class:`GuardedWebSocketResponse` plugs both into aiohttp (pinned 3.14.x; it overrides the
private ``_post_start``/``_close_transport`` hooks and swaps the protocol's payload parser,
so an aiohttp upgrade must re-run tests/integration/test_hostile_wire.py). The handler must
``await ws.lingered()`` before returning, or aiohttp closes the socket early.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiohttp import WebSocketError, WSCloseCode, web

_ERROR_FRAME = (True, b"")

#: Size in bytes of a masking key (every client frame header ends with one).
_MASK_LEN = 4


class FrameScanner:
    """Follows client frame boundaries across chunks of a WebSocket byte stream (sans-IO).

    Only headers are parsed (2-14 bytes a frame); payloads are skipped by their declared
    length. State between chunks: payload bytes still to skip, and a partial header.
    """

    __slots__ = ("_skip", "_head")

    def __init__(self) -> None:
        self._skip = 0          # bytes of the current frame (payload/mask key) not yet seen
        self._head = b""        # the start of a header split across chunks (< 14 bytes)

    def find_unmasked(self, data: bytes) -> int | None:
        """Offset in ``data`` where the first unmasked frame starts, or None if every frame
        header in it is masked (a header that began in an earlier chunk gives offset 0).
        After a hit the scanner's state is undefined: stop feeding it."""
        n = len(data)
        skip = self._skip
        if skip >= n:                       # the whole chunk is payload
            self._skip = skip - n
            return None
        head = self._head
        if head:
            buf = head + data
            base = len(head)
            pos = 0
        else:
            buf = data
            base = 0
            pos = skip
        end = len(buf)
        while True:
            avail = end - pos
            if avail < 2:
                break
            b1 = buf[pos + 1]
            if not b1 & 0x80:
                return max(pos - base, 0)
            length = b1 & 0x7F
            if length < 126:
                pos += 2 + _MASK_LEN + length
            elif length == 126:
                if avail < 4:
                    break
                pos += 4 + _MASK_LEN + ((buf[pos + 2] << 8) | buf[pos + 3])
            else:
                if avail < 10:
                    break
                pos += 10 + _MASK_LEN + int.from_bytes(buf[pos + 2:pos + 10], "big")
            if pos >= end:
                self._skip = pos - end
                self._head = b""
                return None
        self._head = buf[pos:]
        self._skip = 0
        return None


class MaskGuard:
    """Sits between aiohttp's protocol and its WebSocketReader: scans each chunk, passes it
    on, and turns an unmasked frame into ``WebSocketError(1002)`` on the reader's queue.
    ``on_eof()`` is called when the connection is gone (after the reader is told)."""

    __slots__ = ("_inner", "_queue", "_scanner", "_on_eof", "_failed")

    def __init__(self, inner: Any, queue: Any, on_eof: Callable[[], None] | None = None) -> None:
        self._inner = inner
        self._queue = queue
        self._scanner = FrameScanner()
        self._on_eof = on_eof
        self._failed = False

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        """aiohttp's parser interface: returns ``(error_or_eof, tail)``."""
        if self._failed:
            return _ERROR_FRAME
        if type(data) is not bytes:
            data = bytes(data)
        bad = self._scanner.find_unmasked(data)
        if bad is None:
            return self._inner.feed_data(data)
        self._failed = True
        if bad:                                   # frames before the bad one, in order
            eof, _ = self._inner.feed_data(data[:bad])
            if eof:                               # aiohttp already refused something earlier
                return _ERROR_FRAME
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR,
                                                 "client frames must be masked (RFC 6455 5.1)"))
        return _ERROR_FRAME

    def feed_eof(self) -> None:
        """The connection is gone."""
        self._inner.feed_eof()
        if self._on_eof is not None:
            self._on_eof()


class GuardedWebSocketResponse(web.WebSocketResponse):
    """``web.WebSocketResponse`` + unmasked-frame check (1002) + lingering close.

    ``linger_s``: how long a lingering close waits for the client to close, seconds.
    """

    def __init__(self, *, linger_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._linger_s = linger_s
        self._linger: asyncio.Future[None] | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- aiohttp hooks (private API of aiohttp 3.14) -------------------------------------

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        proto = request.protocol
        # Bytes that came with the handshake would reach aiohttp's reader unchecked: hold them.
        tail = proto._message_tail
        proto._message_tail = b""
        super()._post_start(request, protocol, writer)
        guard = MaskGuard(self._parser, self._reader, self._connection_gone)
        proto._payload_parser = guard
        if tail:
            eof, _ = guard.feed_data(tail)
            if eof:
                proto.close()

    async def write_eof(self) -> None:  # type: ignore[override]
        """aiohttp calls this once the handler returned. When the handshake failed half-way (the
        client left while the 101 was being written: headers started, WebSocket writer never
        set up), there is nothing to close but the socket: aiohttp's own write_eof would raise
        ``RuntimeError('Call .prepare() first')`` and log it as an unhandled exception."""
        if self._writer is None and self._payload_writer is not None:
            self._eof_sent = True
            req = self._req
            transport = req.transport if req is not None else None
            if transport is not None:
                transport.close()
            return
        await super().write_eof()

    def _close_transport(self) -> None:
        req = self._req
        transport = req.transport if req is not None else None
        if transport is None:
            return
        # 1006 here = we sent a close frame and did not read the client's (a reader error or
        # a close timeout): the client may still be sending.
        if (self._close_code != WSCloseCode.ABNORMAL_CLOSURE or self._linger is not None
                or transport.is_closing() or not transport.can_write_eof()):
            transport.close()
            return
        self._start_linger(req.protocol, transport)

    # -- lingering close ----------------------------------------------------------------

    def _start_linger(self, proto: Any, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        self._linger = loop.create_future()
        try:
            transport.write_eof()                 # FIN after the close frame
        except (OSError, RuntimeError):
            self._connection_gone()
            return
        if proto._reading_paused:                 # flow control must not stop the discarding
            proto.resume_reading()
        self._linger_timer = loop.call_later(self._linger_s, self._connection_gone)

    def _connection_gone(self) -> None:
        """End a lingering close (client closed, or the timer fired); idempotent."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        req = self._req
        transport = req.transport if req is not None else None
        if transport is not None and self._linger is not None and not transport.is_closing():
            transport.close()
        if self._linger is not None and not self._linger.done():
            self._linger.set_result(None)

    @property
    def lingering(self) -> bool:
        """True while a lingering close is waiting for the client."""
        return self._linger is not None and not self._linger.done()

    def end_linger(self) -> None:
        """Cut a lingering close short (server shutdown): close the socket now."""
        self._connection_gone()

    async def lingered(self) -> None:
        """Wait until a lingering close (if one started) is over: at most ``linger_s`` s."""
        if self._linger is not None:
            await self._linger
