"""The tim driver's judgement of the server's 101 answer: the shortcut for an answer shaped like
the last accepted one must give what the full check gives."""
from __future__ import annotations

import base64
import os

from harness.drivers import tim
from harness.drivers.websocket import accept_token, check_upgrade_response


def _head(key: bytes, accept: bytes | None = None, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + (accept_token(key) if accept is None else accept) + extra)


def test_the_shortcut_agrees_with_the_full_check() -> None:
    tim._ACCEPTED_101.clear()
    keys = [base64.b64encode(os.urandom(16)) for _ in range(4)]
    assert tim._judge_101(_head(keys[0]), keys[0]) is None and tim._ACCEPTED_101  # learnt
    assert tim._judge_101(_head(keys[1]), keys[1]) is None                        # same shape, its own token
    wrong = _head(keys[2], accept=accept_token(keys[3]))                             # same shape, another key's token
    assert tim._judge_101(wrong, keys[2]) == check_upgrade_response(wrong, keys[2]) is not None
    ext = _head(keys[2], extra=b"\r\nSec-WebSocket-Extensions: permessage-deflate")  # another shape
    assert tim._judge_101(ext, keys[2]) == check_upgrade_response(ext, keys[2]) is not None
    assert tim._judge_101(_head(keys[3]), keys[3]) is None
