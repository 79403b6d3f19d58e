"""RFC 6455 frames for a WebSocket *client*, without a general-purpose framing library on the hot path.

The client sends only a few frame shapes (a masked text frame, a pong, a close) and the
server's frames are parsed by :class:`FrameReader`, an incremental decoder that checks what
the RFC makes a client check (no RSV bits without an extension, known opcodes, unmasked
server frames, minimal length encoding, control frames <= 125 bytes and unfragmented,
continuations only inside a fragmented message, UTF-8 text, valid close codes) and reports a
violation with the close code to answer it with (1002, 1007, or 1009 for a message above the
limit).

Masking (RFC 6455 5.3): every client frame gets a fresh 4-byte key from the OS's CSPRNG
(``os.urandom``, drawn 4 KiB at a time so a flow costs no ``getrandom`` syscall; the pool is
reset in a forked child, so processes never share keys); the payload is XORed with the key in
one big-integer operation (``int.from_bytes``), which is exact for any length.
Pure functions; no I/O. Unit-tested against wsproto in both directions.
"""
from __future__ import annotations

import os
import struct

__all__ = ["OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG", "FrameError", "FrameReader",
           "close_frame", "mask", "random_bytes", "random_key", "client_frame", "text_frame"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPS = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
_CONTROL_OPS = frozenset((OP_CLOSE, OP_PING, OP_PONG))

_POOL_BYTES = 4096
_pool = b""
_pool_at = 0


_keys: list[int] = []  # masking keys as ints, drawn 4 KiB at a time (random_key)
_KEYS_OF = struct.Struct("<1024I").unpack


def _reset_pool() -> None:
    global _pool, _pool_at
    _pool, _pool_at = b"", 0
    _keys.clear()


os.register_at_fork(after_in_child=_reset_pool)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the OS's CSPRNG (``os.urandom``), served from a per-process pool."""
    global _pool, _pool_at
    at = _pool_at
    end = at + n
    if end > len(_pool):
        _pool, at, end = os.urandom(max(_POOL_BYTES, n)), 0, n
    _pool_at = end
    return _pool[at:end]


def random_key() -> int:
    """A fresh 4-byte masking key from the OS's CSPRNG as an int (the key's bytes are
    ``key.to_bytes(4, "little")``), served from a per-process pool of 1,024."""
    try:
        return _keys.pop()
    except IndexError:
        _keys.extend(_KEYS_OF(os.urandom(4096)))
        return _keys.pop()


_from = int.from_bytes


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (RFC 6455 5.3); the same call unmasks."""
    n = len(payload)
    if not n:
        return b""
    k = key * ((n >> 2) + 1)
    return (_from(payload, "little") ^ _from(k[:n], "little")).to_bytes(n, "little")


_H2 = struct.Struct("!BB").pack
_H4 = struct.Struct("!BBH").pack
_H10 = struct.Struct("!BBQ").pack


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame (header + key + masked payload)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = _H2(b0, 0x80 | n)
    elif n < 65536:
        head = _H4(b0, 0x80 | 126, n)
    else:
        head = _H10(b0, 0x80 | 127, n)
    key = random_bytes(4)
    return head + key + mask(payload, key)


def text_frame(text: str) -> bytes:
    """A masked, unfragmented text frame carrying ``text``."""
    return client_frame(OP_TEXT, text.encode("utf-8"))


def close_frame(code: int | None = 1000, reason: str = "") -> bytes:
    """A masked close frame; ``code`` None (or 1005, "no status") sends an empty payload."""
    if code is None or code == 1005 or code == 1006:
        return client_frame(OP_CLOSE, b"")
    payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return client_frame(OP_CLOSE, payload)


class FrameError(Exception):
    """The server broke RFC 6455; ``code`` is the close code to answer with (1002, 1007, 1009)."""

    def __init__(self, code: int, desc: str) -> None:
        super().__init__(desc)
        self.code = code


def _valid_close_code(code: int) -> bool:
    # RFC 6455 7.4: 1000-1003, 1007-1011 (+1012-1014 registered since) defined; 3000-4999 for
    # libraries and applications; 1004-1006 and 1015 must not be sent; the rest is reserved.
    return (1000 <= code <= 1003) or (1007 <= code <= 1014) or (3000 <= code <= 4999)


class FrameReader:
    """Incremental decoder of server frames. ``feed(data)`` returns the complete messages and
    control frames in wire order as ``(opcode, payload)``: ``OP_TEXT`` (payload ``str``, the whole
    message, fragments joined), ``OP_BINARY`` (bytes, whole message), ``OP_PING`` / ``OP_PONG``
    (bytes), ``OP_CLOSE`` (payload ``(code, reason)``, code 1005 when the frame had none).
    Raises :class:`FrameError` on a violation; after that (or a close) the reader is done."""

    __slots__ = ("max_message", "_buf", "_parts", "_parts_op", "_parts_len")

    def __init__(self, max_message: int = 1 << 20) -> None:
        self.max_message = max_message
        self._buf = b""
        self._parts: list[bytes] | None = None
        self._parts_op = 0
        self._parts_len = 0

    def feed(self, data: bytes) -> list[tuple[int, object]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, object]] = []
        at = 0
        end = len(buf)
        while end - at >= 2:
            b0 = buf[at]
            b1 = buf[at + 1]
            n = b1 & 0x7F
            if b1 & 0x80:
                raise FrameError(1002, "the server sent a masked frame")
            if b0 & 0x70:
                raise FrameError(1002, "RSV bits set without a negotiated extension")
            op = b0 & 0x0F
            fin = b0 & 0x80
            head = 2
            if n == 126:
                if end - at < 4:
                    break
                n = (buf[at + 2] << 8) | buf[at + 3]
                if n < 126:
                    raise FrameError(1002, "non-minimal payload length encoding")
                head = 4
            elif n == 127:
                if end - at < 10:
                    break
                n = _from(buf[at + 2:at + 10], "big")
                if n >> 63:
                    raise FrameError(1002, "payload length with the most significant bit set")
                if n < 65536:
                    raise FrameError(1002, "non-minimal payload length encoding")
                head = 10
            if op in _CONTROL_OPS:
                if n > 125:
                    raise FrameError(1002, "control frame payload above 125 bytes")
                if not fin:
                    raise FrameError(1002, "fragmented control frame")
            elif op not in _DATA_OPS:
                raise FrameError(1002, f"unknown opcode {op:#x}")
            elif n + self._parts_len > self.max_message:
                raise FrameError(1009, "message too big")
            if end - at < head + n:
                break
            payload = buf[at + head:at + head + n]
            at += head + n
            if op == OP_TEXT or op == OP_BINARY:
                if self._parts is not None:
                    raise FrameError(1002, "a new message inside a fragmented one")
                if fin:
                    out.append((op, self._decode(op, payload)))
                else:
                    self._parts, self._parts_op, self._parts_len = [payload], op, n
            elif op == OP_CONT:
                parts = self._parts
                if parts is None:
                    raise FrameError(1002, "continuation frame without a message to continue")
                parts.append(payload)
                self._parts_len += n
                if fin:
                    self._parts = None
                    self._parts_len = 0
                    out.append((self._parts_op, self._decode(self._parts_op, b"".join(parts))))
            elif op == OP_CLOSE:
                if n == 0:
                    out.append((OP_CLOSE, (1005, "")))
                elif n == 1:
                    raise FrameError(1002, "close frame with a 1-byte payload")
                else:
                    code = (payload[0] << 8) | payload[1]
                    if not _valid_close_code(code):
                        raise FrameError(1002, f"invalid close code {code}")
                    try:
                        reason = payload[2:].decode("utf-8")
                    except UnicodeDecodeError:
                        raise FrameError(1007, "close reason is not UTF-8") from None
                    out.append((OP_CLOSE, (code, reason)))
                self._buf = b""
                return out  # nothing follows a close
            else:
                out.append((op, payload))
        self._buf = buf[at:] if at < end else b""
        return out

    @property
    def pending(self) -> bool:
        """True while part of a frame or of a fragmented message is buffered."""
        return bool(self._buf) or self._parts is not None

    @staticmethod
    def _decode(op: int, payload: bytes) -> object:
        if op == OP_BINARY:
            return payload
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(1007, "text message is not UTF-8") from None
