"""The tim driver's shortcut for a read of exactly one answer frame (orjson from the receive
buffer) must give what the stdlib path gives, for any answer: ints beyond 64 bits, floats,
nesting, escapes, odd shapes (those go the general way)."""
from __future__ import annotations

import json

import gevent
import pytest
from gevent.hub import Waiter

from harness.drivers.tim import TimDriver, _Link


class _Sock:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent: list[bytes] = []

    def fileno(self) -> int:
        return -1

    def recv_into(self, buf) -> int:
        n = len(self.data)
        buf[:n] = self.data
        return n

    def send(self, data) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def close(self) -> None:
        pass


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    return (bytes((0x81, n)) if n < 126 else bytes((0x81, 126, n >> 8, n & 0xFF))) + payload


def _answer(payload: bytes, via_shortcut: bool):
    """The Reply the driver gives for ``payload`` as the answer to a pending status (seq 5)."""
    drv = TimDriver("ws://127.0.0.1:1/ws", sdk_app_id=1)
    waiter = Waiter()
    drv._pending = {5: ("status", waiter, "", 0.0)}
    sock = _Sock(_frame(payload))
    link = drv._link = _Link(sock, drv)
    link.loop = gevent.get_hub().loop
    if via_shortcut:
        link.on_readable()
    else:
        drv._on_frame(payload.decode("utf-8"))
    if drv._pending:  # not an answer to seq 5 (the driver ignored it or took it for something else)
        return None
    return waiter.get()


ANSWERS = [
    '{"seq":5,"code":0,"desc":"ok","data":{"status":1,"userID":"u1","sessionID":"S1"}}',
    '{"seq":5,"code":0,"desc":"ok","data":{"big":123456789012345678901234567890,"n":-9223372036854775809}}',
    '{"seq":5,"code":0,"desc":"ok","data":{"list":[1,[2,{"x":18446744073709551616}]],"u":18446744073709551615}}',
    '{"seq":5,"code":0,"desc":"ok","data":{"f":1.5,"e":1e5,"g":0.1000000000000000055511151231257827}}',
    '{"seq":5,"code":0,"desc":"ok","data":{"inf":1e400}}',
    '{"seq":5,"code":0,"desc":"\\u00fc\\ud83d\\ude00 ok","data":{"s":"\\u0000\\n","lone":"\\ud800"}}',
    '{"seq":5,"code":0,"desc":"ok","data":{"a":1,"a":2,"b":{"c":null,"d":true}}}',
    '{"seq":5,"code":6014,"desc":null}',
    '{"seq":5,"code":0,"desc":"ok","data":{"x":NaN}}',
    '{"seq":5.0,"code":0,"desc":"ok"}',
    '{"seq":5,"code":1e2,"desc":"ok"}',
    '{"seq":5,"code":0,"desc":"ok","data":[1,2]}',
    ' {"seq":5,"code":0,"desc":"ok"} ',
    '{"seq":5,"code":0,"desc":"ok","data":{"deep":' + "[" * 2000 + "]" * 2000 + "}}",
    '{"seq":5,"code":0,"desc":"ok","data":{"deep":' + "[" * 1020 + "]" * 1020 + "}}",  # orjson takes it
    '{"seq":5,"code":0,"desc":"ok","data":' + '{"a":' * 1020 + "1" + "}" * 1020 + "}",
    '{"seq":5,"code":0,"desc":"' + "x" * 300 + '"}',
]


@pytest.mark.parametrize("text", ANSWERS)
def test_the_shortcut_gives_what_the_stdlib_path_gives(text: str) -> None:
    payload = text.encode("utf-8")
    if len(payload) >= 65536:
        pytest.skip("longer than the shortcut takes")
    got, want = _answer(payload, True), _answer(payload, False)
    assert got == want
    if want is not None and want.data:
        assert json.dumps(got.data) == json.dumps(want.data)  # same types (an int stays an int)


def test_an_int_beyond_64_bits_stays_an_int() -> None:
    reply = _answer(b'{"seq":5,"code":0,"desc":"ok","data":{"sigExpireAt":123456789012345678901234567890}}', True)
    assert reply.outcome == "ok" and reply.data == {"sigExpireAt": 123456789012345678901234567890}
    assert type(reply.data["sigExpireAt"]) is int
