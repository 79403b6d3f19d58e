"""The WebSocket opening handshake with a subprotocol (RFC 7395 subprotocol ``xmpp``), pure functions."""
from __future__ import annotations

from harness.drivers.websocket import accept_token, check_upgrade_response, upgrade_request

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def _head(*extra: bytes) -> bytes:
    return b"\r\n".join((b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
                         b"Sec-WebSocket-Accept: " + accept_token(KEY)) + extra)


def test_request_offers_xmpp():
    req = upgrade_request("/xmpp-websocket", "127.0.0.1:5280", KEY, "xmpp")
    assert req.startswith(b"GET /xmpp-websocket HTTP/1.1\r\nHost: 127.0.0.1:5280\r\n")
    assert b"\r\nSec-WebSocket-Protocol: xmpp\r\n" in req and req.endswith(b"\r\n\r\n")


def test_accepts_only_the_xmpp_subprotocol():
    assert check_upgrade_response(_head(b"Sec-WebSocket-Protocol: xmpp"), KEY, "xmpp") is None
    assert check_upgrade_response(_head(), KEY, "xmpp") == ("fail", "handshake: the server did not accept subprotocol 'xmpp'")
    assert check_upgrade_response(_head(b"Sec-WebSocket-Protocol: chat"), KEY, "xmpp")[0] == "fail"
    assert check_upgrade_response(b"HTTP/1.1 404 Not Found", KEY, "xmpp") == ("fail", "handshake rejected: HTTP 404")
    bad = _head(b"Sec-WebSocket-Protocol: xmpp").replace(accept_token(KEY), b"AAAA")
    assert check_upgrade_response(bad, KEY, "xmpp") == ("fail", "handshake: bad Sec-WebSocket-Accept in the server's answer")
