"""harness.targets.server.wsguard without sockets: the frame scanner over any chunking of a client byte
stream, and the guard in front of aiohttp's real WebSocket reader."""
from __future__ import annotations

import asyncio
import struct

import pytest
from aiohttp import WebSocketError, WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.streams import EofStream
from hypothesis import given
from hypothesis import strategies as st

from harness.targets.server.wsguard import FrameScanner, MaskGuard


def frame(payload: bytes, *, masked: bool = True, opcode: int = 0x1) -> bytes:
    """One client frame with the shortest length encoding (key 0: payload unchanged)."""
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head = bytes([0x80 | opcode, m | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, m | 127]) + struct.pack("!Q", n)
    return head + (b"\x00\x00\x00\x00" if masked else b"") + payload


def feed_in_chunks(data: bytes, cuts: list[int]) -> tuple[int, int] | None:
    """Feed ``data`` cut at ``cuts``; return (chunk start, offset) of the first hit, or None."""
    scanner = FrameScanner()
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(bounds, bounds[1:]):
        hit = scanner.find_unmasked(data[start:end])
        if hit is not None:
            return start, hit
    return None


sizes = st.sampled_from([0, 1, 5, 125, 126, 127, 300, 65535, 65536, 70000])
frames = st.lists(st.tuples(sizes, st.booleans()), min_size=1, max_size=6)


@given(frames, st.lists(st.integers(min_value=0, max_value=400_000), max_size=8))
def test_the_first_unmasked_frame_is_found_under_any_chunking(spec, cuts):
    stream = b"".join(frame(b"a" * n, masked=m) for n, m in spec)
    bad_start = None
    pos = 0
    for n, m in spec:
        if not m:
            bad_start = pos
            break
        pos += len(frame(b"a" * n, masked=m))
    hit = feed_in_chunks(stream, cuts)
    if bad_start is None:
        assert hit is None
    else:
        assert hit is not None
        chunk_start, offset = hit
        # found in the chunk holding the header's second byte, at the header (or chunk) start
        assert chunk_start <= bad_start + 1
        assert chunk_start + offset == max(bad_start, chunk_start)


def test_payload_bytes_that_look_like_headers_are_not_read_as_frames():
    evil = frame(b"\x81\x05hello" * 20)          # payload full of unmasked-looking headers
    assert feed_in_chunks(evil * 3, [7, 50, 300]) is None


def test_a_64_bit_length_is_skipped_without_buffering():
    scanner = FrameScanner()
    big = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 2**40) + b"\x00" * 4
    assert scanner.find_unmasked(big[:1]) is None
    assert scanner.find_unmasked(big[1:5]) is None   # a header split inside the length field
    assert scanner.find_unmasked(big[5:] + b"z" * 1000) is None
    assert scanner.find_unmasked(b"\x81\x05" * 1000) is None  # still inside the 1 TiB payload


class _Protocol:
    """What aiohttp's data queue needs from a protocol (flow control flags)."""

    _reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False


async def _drain(queue: WebSocketDataQueue) -> list:
    out = []
    while True:
        try:
            msg = await asyncio.wait_for(queue.read(), 1)
        except WebSocketError as exc:
            out.append(("error", exc.code))
            return out
        except EofStream:
            out.append(("eof", None))
            return out
        out.append((msg.type, msg.data))


def _guarded() -> tuple[MaskGuard, WebSocketDataQueue, list[str]]:
    loop = asyncio.get_running_loop()
    queue = WebSocketDataQueue(_Protocol(), 65536, loop=loop)
    calls: list[str] = []
    guard = MaskGuard(WebSocketReader(queue, 65537, compress=False, decode_text=True), queue,
                      lambda: calls.append("eof"))
    return guard, queue, calls


def test_guard_delivers_masked_frames_then_refuses_an_unmasked_one_with_1002():
    async def body():
        guard, queue, _ = _guarded()
        assert guard.feed_data(frame(b'{"a":1}')) == (False, b"")
        eof, _ = guard.feed_data(frame(b'{"b":2}') + frame(b'{"c":3}', masked=False) + frame(b'{"d":4}'))
        assert eof is True
        assert guard.feed_data(frame(b'{"e":5}'))[0] is True      # nothing after the refusal
        return await _drain(queue)

    assert asyncio.run(body()) == [(WSMsgType.TEXT, '{"a":1}'), (WSMsgType.TEXT, '{"b":2}'), ("error", 1002)]


def test_guard_refuses_an_unmasked_control_frame_too():
    async def body():
        guard, queue, _ = _guarded()
        assert guard.feed_data(frame(b"", masked=False, opcode=0x9))[0] is True   # ping
        return await _drain(queue)

    assert asyncio.run(body()) == [("error", 1002)]


def test_guard_keeps_aiohttp_own_limits_and_reports_eof():
    async def body():
        guard, queue, calls = _guarded()
        eof, _ = guard.feed_data(frame(b"x" * 70_000)[:1000])            # over 64 KiB: aiohttp's 1009
        got = await _drain(queue)
        assert calls == []
        guard.feed_eof()
        return eof, got, calls

    eof, got, calls = asyncio.run(body())
    assert eof is True and got == [("error", 1009)]
    assert calls == ["eof"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_guard_passes_a_split_stream_through_unchanged(chunk):
    async def body():
        guard, queue, _ = _guarded()
        data = b"".join(frame(f'{{"n":{i}}}'.encode() + b" " * (i * 40)) for i in range(6))
        for i in range(0, len(data), chunk):
            assert guard.feed_data(memoryview(data)[i:i + chunk]) == (False, b"")
        guard.feed_eof()
        return [d for _, d in (await _drain(queue))]

    got = asyncio.run(body())
    assert got[-1] is None                                      # then the end of the stream
    assert [d.strip() for d in got[:-1]] == [f'{{"n":{i}}}' for i in range(6)]
