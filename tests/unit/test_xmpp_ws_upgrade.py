"""The XMPP WebSocket opening handshake helpers (RFC 7395 subprotocol ``xmpp``), pure functions."""
from __future__ import annotations

from harness.client import accept_token
from harness.drivers.xmpp.driver import check_ws_upgrade, ws_upgrade_request

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def _head(*extra: bytes) -> bytes:
    return b"\r\n".join((b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
                         b"Sec-WebSocket-Accept: " + accept_token(KEY)) + extra)


def test_request_offers_xmpp():
    req = ws_upgrade_request("/xmpp-websocket", "127.0.0.1:5280", KEY)
    assert req.startswith(b"GET /xmpp-websocket HTTP/1.1\r\nHost: 127.0.0.1:5280\r\n")
    assert b"\r\nSec-WebSocket-Protocol: xmpp\r\n" in req and req.endswith(b"\r\n\r\n")


def test_accepts_only_the_xmpp_subprotocol():
    assert check_ws_upgrade(_head(b"Sec-WebSocket-Protocol: xmpp"), KEY) is None
    assert check_ws_upgrade(_head(), KEY) == ("fail", "handshake: the server did not choose subprotocol 'xmpp'")
    assert check_ws_upgrade(_head(b"Sec-WebSocket-Protocol: chat"), KEY)[0] == "fail"
    assert check_ws_upgrade(b"HTTP/1.1 404 Not Found", KEY) == ("fail", "handshake rejected: HTTP 404")
    bad = _head(b"Sec-WebSocket-Protocol: xmpp").replace(accept_token(KEY), b"AAAA")
    assert check_ws_upgrade(bad, KEY) == ("fail", "handshake: bad Sec-WebSocket-Accept in the server's answer")
