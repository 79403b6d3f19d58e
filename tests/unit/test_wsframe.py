"""harness.drivers.wsframe against wsproto (the reference implementation) in both directions."""
from __future__ import annotations

import os
import struct

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from harness.drivers import wsframe
from harness.drivers.wsframe import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameError, FrameReader,
                                     client_frame, close_frame, mask, text_frame)


def _server() -> Connection:
    return Connection(ConnectionType.SERVER)


def _naive_mask(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 125, 126, 127, 1000, 65535, 65536, 70001])
def test_mask_is_the_rfc_xor_for_every_length(n: int) -> None:
    payload = os.urandom(n)
    key = os.urandom(4)
    assert mask(payload, key) == _naive_mask(payload, key)
    assert mask(mask(payload, key), key) == payload
    assert mask(b"\x00" * n, b"\xff\x00\xff\x00") == bytes(0xFF if i % 2 == 0 else 0 for i in range(n))


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_a_wsproto_server_reads_our_text_frames_of_every_length_class(n: int) -> None:
    text = ("héllo-" * (n // 6 + 1))[:n]
    srv = _server()
    srv.receive_data(text_frame(text))
    events = list(srv.events())
    got = "".join(e.data for e in events if isinstance(e, TextMessage))
    assert got == text
    texts = [e for e in events if isinstance(e, TextMessage)]
    assert texts and texts[-1].message_finished


def test_frames_are_masked_with_a_fresh_key_each_time() -> None:
    a, b = text_frame("same"), text_frame("same")
    assert a[1] & 0x80 and b[1] & 0x80  # mask bit
    assert a[2:6] != b[2:6]  # 2**-32 chance of a false failure
    assert _naive_mask(a[6:], a[2:6]) == b"same"


def test_wsproto_reads_our_close_pong_and_fragments() -> None:
    srv = _server()
    srv.receive_data(client_frame(OP_TEXT, b"ab", fin=False) + client_frame(0x0, b"cd", fin=True)
                     + client_frame(OP_PONG, b"hi") + close_frame(1000, "bye"))
    events = list(srv.events())
    assert "".join(e.data for e in events if isinstance(e, TextMessage)) == "abcd"
    assert any(isinstance(e, Pong) and e.payload == b"hi" for e in events)
    close = [e for e in events if isinstance(e, CloseConnection)]
    assert close and close[0].code == 1000 and close[0].reason == "bye"
    srv2 = _server()
    srv2.receive_data(close_frame(None))
    assert [e.code for e in srv2.events() if isinstance(e, CloseConnection)] == [1005]


def _wsproto_server_frames(*events) -> bytes:
    srv = _server()
    return b"".join(srv.send(e) for e in events)


def test_we_read_what_a_wsproto_server_sends_in_any_chunking() -> None:
    big = "x" * 70_000
    wire = _wsproto_server_frames(TextMessage(data="héllo"), Ping(payload=b"p"), TextMessage(data=big),
                                  BytesMessage(data=b"\x00\x01"), TextMessage(data="ab", message_finished=False),
                                  TextMessage(data="cd", message_finished=True), CloseConnection(code=1001, reason="going"))
    want = [(OP_TEXT, "héllo"), (OP_PING, b"p"), (OP_TEXT, big), (OP_BINARY, b"\x00\x01"), (OP_TEXT, "abcd"),
            (OP_CLOSE, (1001, "going"))]
    for step in (1, 2, 3, 7, 100, 4096, len(wire)):
        r = FrameReader()
        got = []
        for i in range(0, len(wire), step):
            got += r.feed(wire[i:i + step])
        assert got == want, step


def test_close_without_payload_is_1005() -> None:
    assert FrameReader().feed(b"\x88\x00") == [(OP_CLOSE, (1005, ""))]


@pytest.mark.parametrize("wire, code", [
    (b"\x81\x82abcdxx", 1002),                       # masked server frame
    (b"\xc1\x01a", 1002),                            # RSV1 without an extension
    (b"\x83\x00", 1002),                             # reserved data opcode
    (b"\x8b\x00", 1002),                             # reserved control opcode
    (b"\x80\x01a", 1002),                            # continuation with nothing to continue
    (b"\x01\x01a\x81\x01b", 1002),                   # a new message inside a fragmented one
    (b"\x09\x00", 1002),                             # fragmented ping
    (b"\x89\x7e\x00\x7e" + b"a" * 126, 1002),        # control frame above 125 bytes
    (b"\x81\x7e\x00\x05hello", 1002),                # non-minimal 16-bit length
    (b"\x81\x7f" + struct.pack("!Q", 5) + b"hello", 1002),   # non-minimal 64-bit length
    (b"\x81\x7f" + struct.pack("!Q", 1 << 63), 1002),        # length with the MSB set
    (b"\x88\x01\x03", 1002),                         # close with a 1-byte payload
    (b"\x88\x02\x03\xed", 1002),                     # close code 1005 must not be sent
    (b"\x88\x02\x03\xe7", 1002),                     # close code 999
    (b"\x88\x04\x03\xe8\xff\xfe", 1007),             # close reason not UTF-8
    (b"\x81\x02\xff\xfe", 1007),                     # text not UTF-8
    (b"\x01\x01\xc3\x80\x01A", 1007),                # UTF-8 split across fragments, then broken
])
def test_violations_carry_the_close_code_to_answer_with(wire: bytes, code: int) -> None:
    with pytest.raises(FrameError) as exc:
        FrameReader().feed(wire)
    assert exc.value.code == code


def test_utf8_split_across_fragments_is_fine() -> None:
    assert FrameReader().feed(b"\x01\x01\xc3\x80\x01\xa9") == [(OP_TEXT, "é")]


def test_a_message_above_the_limit_is_1009_before_it_is_buffered() -> None:
    r = FrameReader(max_message=1000)
    with pytest.raises(FrameError) as exc:
        r.feed(b"\x81\x7e" + struct.pack("!H", 1001))
    assert exc.value.code == 1009
    r = FrameReader(max_message=1000)
    r.feed(b"\x01\x7e" + struct.pack("!H", 600) + b"a" * 600)
    with pytest.raises(FrameError) as exc:
        r.feed(b"\x80\x7e" + struct.pack("!H", 600))
    assert exc.value.code == 1009


def test_the_key_pool_is_not_shared_with_a_forked_child() -> None:
    wsframe.random_bytes(4)  # the pool exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(w, wsframe.random_bytes(16))
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 16)
    os.close(r)
    os.close(w)
    assert child != wsframe.random_bytes(16)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 31, 125, 126, 127, 250, 1001, 65535, 65536, 70001])
def test_the_tim_drivers_request_frames_are_read_by_wsproto_and_masked_with_fresh_keys(n: int) -> None:
    """tim's own text-frame builder (the key as an int, the mask as one multiplication)."""
    from harness.drivers.tim import _text_frame_ascii

    text = ('{"cmd":"x","a":"' + "0123456789abcdef" * (n // 16 + 1))[:n]
    frames = [_text_frame_ascii(text) for _ in range(3)]
    srv = _server()
    srv.receive_data(b"".join(frames))
    got = [e.data for e in srv.events() if isinstance(e, TextMessage)]
    assert "".join(got) == text * 3
    head = 2 if n < 126 else (4 if n < 65536 else 10)
    keys = {f[head:head + 4] for f in frames}
    assert len(keys) == 3 and all(f[1] & 0x80 for f in frames)
    assert _naive_mask(frames[0][head + 4:], frames[0][head:head + 4]) == text.encode()


def test_the_int_key_pool_is_not_shared_with_a_forked_child() -> None:
    wsframe.random_key()  # the pool exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(w, struct.pack("<4I", *(wsframe.random_key() for _ in range(4))))
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 16)
    os.close(r)
    os.close(w)
    assert child != struct.pack("<4I", *(wsframe.random_key() for _ in range(4)))
