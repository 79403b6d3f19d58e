"""Clients that abort mid-handshake (what a load tool does to its open connections at the end
of a run, seen with Tsung): raw TCP connections send a partial or complete WebSocket upgrade
request and reset or close the socket before or while the 101 is written. The server treats it
like every other client leaving: no traceback, no "Unhandled exception", still serving."""
from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
import urllib.request

import pytest


def _upgrade(host: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def _abort(host: str, port: int, how: str, i: int) -> None:
    s = socket.create_connection((host, port), timeout=5)
    try:
        req = _upgrade(host, port)
        if how == "partial":
            s.sendall(req[: len(req) // 2])
        else:
            s.sendall(req)
        if how == "wait_101":
            s.recv(1)                     # the 101 is being written: go now
        elif how == "spin" and i % 2:
            time.sleep(0.0005 * (i % 7))  # spread the resets over the handshake
        if how == "fin":
            s.shutdown(socket.SHUT_WR)
            s.close()
            return
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST on close
    finally:
        s.close()


@pytest.mark.parametrize("how", ["rst", "partial", "spin", "wait_101", "fin"])
def test_clients_aborting_the_handshake_leave_no_traceback(launch_server, how):
    srv = launch_server()
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        for i in range(60):
            try:
                _abort(srv.host, srv.port, how, k * 60 + i)
            except OSError as exc:  # the server may reset us first: fine, that is the point
                if not isinstance(exc, (ConnectionError, socket.timeout)):
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    time.sleep(0.5)  # let the server finish the aborted handlers
    assert srv.proc.poll() is None
    with urllib.request.urlopen(f"{srv.base_url}/healthz", timeout=5) as r:
        assert r.status == 200
    log = srv.stderr()
    assert "Traceback" not in log and "Unhandled exception" not in log and "Error handling request" not in log, log[-3000:]
