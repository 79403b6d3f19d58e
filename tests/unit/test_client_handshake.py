"""The client's hand-rolled WebSocket opening handshake (pure parts: no sockets)."""
from __future__ import annotations

import socket

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request

from harness.drivers import websocket as client_mod
from harness.drivers.websocket import accept_token, check_upgrade_response, resolve_addresses, upgrade_request

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 section 1.3's example
GOOD = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


def test_accept_token_is_rfc6455s() -> None:
    assert accept_token(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_wsproto_server_accepts_our_request_and_we_accept_its_answer() -> None:
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(upgrade_request("/ws?x=1", "127.0.0.1:8080", KEY))
    events = list(server.events())
    assert isinstance(events[0], Request)
    assert (events[0].target, events[0].host) == ("/ws?x=1", "127.0.0.1:8080")
    assert events[0].subprotocols == [] and events[0].extensions == []
    answer = server.send(AcceptConnection())
    head, sep, rest = answer.partition(b"\r\n\r\n")
    assert sep and rest == b""
    assert check_upgrade_response(head, KEY) is None


def test_a_wsproto_server_rejection_is_a_fail_naming_the_status() -> None:
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(upgrade_request("/ws", "h:1", KEY))
    list(server.events())
    head = server.send(RejectConnection(status_code=403)).partition(b"\r\n\r\n")[0]
    assert check_upgrade_response(head, KEY) == ("fail", "handshake rejected: HTTP 403")


def test_header_names_and_tokens_are_case_insensitive() -> None:
    head = (b"HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, upgrade\r\n"
            b"sec-websocket-accept:s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nServer: x")
    assert check_upgrade_response(head, KEY) is None


@pytest.mark.parametrize("head, words", [
    (GOOD.replace(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", b"AAAAAAAAAAAAAAAAAAAAAAAAAAA="), "Sec-WebSocket-Accept"),
    (GOOD.replace(b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", b""), "Sec-WebSocket-Accept"),
    (GOOD.replace(b"Upgrade: websocket\r\n", b""), "Upgrade: websocket"),
    (GOOD.replace(b"Connection: Upgrade", b"Connection: close"), "Connection: Upgrade"),
    (GOOD + b"\r\nSec-WebSocket-Extensions: permessage-deflate", "extension"),
    (GOOD + b"\r\nSec-WebSocket-Protocol: chat", "subprotocol"),
    (GOOD + b"\r\nno colon here", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0", "handshake rejected: HTTP 200"),
    (b"HTTP/1.1 404 Not Found", "handshake rejected: HTTP 404"),
    (b"SSH-2.0-OpenSSH_9.6", "not an HTTP"),
    (b"HTTP/1.1 1O1 Switching", "not an HTTP"),
    (b"", "not an HTTP"),
])
def test_bad_answers_are_a_fail_with_one_clear_sentence(head: bytes, words: str) -> None:
    outcome, desc = check_upgrade_response(head, KEY)
    assert outcome == "fail" and words in desc and desc.startswith("handshake")


def test_the_answer_is_checked_against_our_own_key() -> None:
    assert check_upgrade_response(GOOD, b"x3JJHMbDL1EzLkh9GBhXDw==")[0] == "fail"


def test_ip_literals_need_no_resolver(monkeypatch) -> None:
    def no_dns(*_a, **_k):
        raise AssertionError("getaddrinfo must not be called for an IP literal")

    monkeypatch.setattr(client_mod.gsocket, "getaddrinfo", no_dns)
    assert resolve_addresses("127.0.0.1", 8080) == [(socket.AF_INET, ("127.0.0.1", 8080))]
    assert resolve_addresses("::1", 9000) == [(socket.AF_INET6, ("::1", 9000, 0, 0))]
    with pytest.raises(AssertionError):
        resolve_addresses("some.name", 80)   # a name does go through the resolver
