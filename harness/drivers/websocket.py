"""WebSocket client plumbing shared by drivers (RFC 6455) on plain gevent sockets: URL parsing,
address resolution (IP literals without a resolver call), the hand-built opening handshake
(:func:`upgrade_request`, :func:`check_upgrade_response`: status 101, ``Upgrade``,
``Connection``, ``Sec-WebSocket-Accept``, optional subprotocol). Each driver opens its own
sockets (the tim driver raw and non-blocking, the xmpp driver with a fast loopback connect).
Pure functions are unit-tested without sockets."""
from __future__ import annotations

import base64
import functools
import hashlib
from typing import Sequence
from urllib.parse import urlsplit

from gevent import socket as gsocket

__all__ = ["Addresses", "MAX_HANDSHAKE_BYTES", "RECV_CHUNK", "WS_GUID", "accept_token", "check_upgrade_response",
           "parse_ws_url", "resolve_addresses", "upgrade_request"]

RECV_CHUNK = 65536  # bytes per recv(); no per-connection receive buffer beyond wsproto's
MAX_HANDSHAKE_BYTES = 16384  # the server's HTTP 101 answer (status line + headers) must fit in this

#: RFC 6455 section 1.3: the GUID appended to Sec-WebSocket-Key for Sec-WebSocket-Accept.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: (address family, socket address) pairs to try in order, as ``socket.getaddrinfo`` gives them.
Addresses = Sequence[tuple[int, tuple]]


@functools.lru_cache(maxsize=64)
def parse_ws_url(url: str) -> tuple[str, int, str, str]:
    """Split ``ws://host:port/path?query`` into ``(host, port, target, host_header)``.

    ``host`` is bare (``::1`` for ``[::1]``); ``target`` is path + query, ``/ws`` when the URL
    has no path. Raises ``ValueError`` with one sentence on anything else (``wss`` is not
    supported: the harness only talks to loopback).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("client url must be a non-empty string like ws://127.0.0.1:8080/ws")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"client url {url!r} is not a valid ws:// URL ({exc})") from None
    if parts.scheme != "ws":
        raise ValueError(f"client url {url!r} must start with ws:// (got scheme {parts.scheme!r})")
    host = parts.hostname
    if not host:
        raise ValueError(f"client url {url!r} has no host")
    if port is None:
        port = 80
    target = parts.path or "/ws"
    if parts.query:
        target += "?" + parts.query
    shown = f"[{host}]" if ":" in host else host
    return host, port, target, f"{shown}:{port}"


def resolve_addresses(host: str, port: int) -> list[tuple[int, tuple]]:
    """Where to connect for ``host:port``: ``[(family, sockaddr), ...]`` in the order to try.

    An IP literal (``127.0.0.1``, ``::1``) is used as is, with no resolver call (gevent's
    ``create_connection`` hops to a thread pool for getaddrinfo even for those); a name is
    resolved with ``getaddrinfo`` (raises ``OSError`` / ``socket.gaierror`` when it cannot be).
    """
    for family in (gsocket.AF_INET, gsocket.AF_INET6):
        try:
            gsocket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return [(family, (host, port) if family == gsocket.AF_INET else (host, port, 0, 0))]
    infos = gsocket.getaddrinfo(host, port, 0, gsocket.SOCK_STREAM)
    out = [(family, sockaddr) for family, _type, _proto, _name, sockaddr in infos]
    if not out:
        raise OSError(f"{host!r} resolves to no address")
    return out


def accept_token(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``Sec-WebSocket-Key: key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def upgrade_request(target: str, host_header: str, key: bytes, subprotocol: str | None = None) -> bytes:
    """The client's HTTP/1.1 upgrade request (RFC 6455 4.1): no extension; ``subprotocol``
    (e.g. ``xmpp``, RFC 7395) offered when given."""
    offer = f"\r\nSec-WebSocket-Protocol: {subprotocol}".encode("ascii") if subprotocol else b""
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: "
    ).encode("ascii") + key + offer + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"


def check_upgrade_response(head: bytes, key: bytes, subprotocol: str | None = None) -> tuple[str, str] | None:
    """Judge the server's answer to an upgrade request (``head`` = status line + headers, without
    the blank line). None when it accepted the WebSocket, else ``(outcome, desc)`` with outcome
    ``fail``: a non-101 status (``handshake rejected: HTTP <status>``), a malformed answer or a bad
    ``Sec-WebSocket-Accept`` / ``Upgrade`` / ``Connection``, or a subprotocol or extension we did
    not offer. Pure: no I/O, never raises."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        return ("fail", "handshake: the server's answer is not an HTTP/1.x status line")
    status = int(parts[1])
    if status != 101:
        return ("fail", f"handshake rejected: HTTP {status}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        name = name.strip().lower()
        if not sep or not name:
            return ("fail", "handshake: malformed header line in the server's answer")
        value = value.strip()
        headers[name] = headers[name] + b", " + value if name in headers else value
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        return ("fail", "handshake: the server's 101 answer lacks 'Upgrade: websocket'")
    if b"upgrade" not in (t.strip() for t in headers.get(b"connection", b"").lower().split(b",")):
        return ("fail", "handshake: the server's 101 answer lacks 'Connection: Upgrade'")
    if headers.get(b"sec-websocket-accept") != accept_token(key):
        return ("fail", "handshake: bad Sec-WebSocket-Accept in the server's answer")
    if headers.get(b"sec-websocket-extensions"):
        return ("fail", "handshake: the server chose an extension the client did not offer")
    chosen = headers.get(b"sec-websocket-protocol")
    if subprotocol is None:
        if chosen:
            return ("fail", "handshake: the server chose a subprotocol the client did not offer")
    elif chosen != subprotocol.encode("ascii"):
        return ("fail", f"handshake: the server did not accept subprotocol {subprotocol!r}")
    return None
