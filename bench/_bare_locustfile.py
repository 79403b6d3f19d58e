"""Baseline for bench/client_login_rate.py: a bare Locust User doing connect + login + close.

A raw gevent socket + wsproto handshake, one login text frame, read the answer, WebSocket
close handshake, socket close. Connections are spread over source addresses 127.0.0.2..254
round-robin, as the harness does on loopback. It fires Locust's request event (``connect``, ``login``) and
nothing else: no harness, no journal, no UserSig signing (sigs are pre-generated).

Driven by the environment (set by the bench, never needed by hand):
  BENCH_SIGS  JSON file ``{"sdkappid": int, "users": [[userID, sig], ...]}``; user i takes entry i
  BENCH_OUT   where to write ``{"ok": [unix ns of each ok login], "fail": [unix ns of each failure]}`` at quit
``--host ws://127.0.0.1:PORT`` names the server (loopback only).
"""
from __future__ import annotations

import locust  # noqa: F401  (first: gevent monkey-patching)

import itertools
import json
import os
import time
from array import array
from typing import Any
from urllib.parse import urlsplit

from gevent import socket as gsocket
from locust import User, constant, events, task
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request, TextMessage

TIMEOUT_S = 10.0


class BareLogin(User):
    """connect -> login -> close, repeated; one pre-made account per user."""

    wait_time = constant(0)

    def on_start(self) -> None:
        shared = self.environment.bare
        self.sdkappid = shared["sdkappid"]
        self.user_id, self.sig = shared["users"][next(shared["next"]) % len(shared["users"])]
        self.ok_times: array = shared["ok"]
        self.fail_times: array = shared["fail"]
        u = urlsplit(self.host or "")
        if u.hostname not in ("127.0.0.1", "localhost", "::1") and not (u.hostname or "").startswith("127."):
            raise RuntimeError("the bare bench only talks to loopback (--host ws://127.0.0.1:PORT)")
        self.addr = (u.hostname, u.port or 80)
        self.host_header = f"{u.hostname}:{u.port or 80}"
        self.sources, self.src_i = shared["sources"], shared["src_i"]
        self.k = 0

    def _fire(self, name: str, began: float, exc: Exception | None) -> None:
        self.environment.events.request.fire(request_type="WS", name=name,
                                             response_time=(time.perf_counter() - began) * 1000.0,
                                             response_length=0, exception=exc, context={})

    @task
    def flow(self) -> None:
        self.k += 1
        began = time.perf_counter()
        sock = None
        stage = "connect"
        try:
            src = self.sources[next(self.src_i) % len(self.sources)]
            sock = gsocket.create_connection(self.addr, timeout=TIMEOUT_S, source_address=(src, 0))
            sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
            ws = WSConnection(ConnectionType.CLIENT)
            sock.sendall(ws.send(Request(host=self.host_header, target="/ws")))
            _until(sock, ws, (AcceptConnection, RejectConnection))  # raises on a rejection
            self._fire("connect", began, None)
            began, stage = time.perf_counter(), "login"
            frame = json.dumps({"cmd": "login", "seq": 1, "sdkAppID": self.sdkappid, "userID": self.user_id,
                                "userSig": self.sig, "platform": "Android",
                                "instanceID": f"bare-{self.user_id}-{self.k}"}, separators=(",", ":"))
            sock.sendall(ws.send(TextMessage(data=frame)))
            code = json.loads(_until(sock, ws, (TextMessage,)).data).get("code")
            stage = "close"
            if code == 0:
                self.ok_times.append(time.time_ns())
                self._fire("login", began, None)
            else:
                self.fail_times.append(time.time_ns())
                self._fire("login", began, RuntimeError(f"code {code}"))
            sock.sendall(ws.send(CloseConnection(code=1000, reason="bye")))
            _until(sock, ws, (CloseConnection,))  # the server's close reply, as the harness client waits for
        except Exception as exc:  # transport trouble: counted, never raised into Locust
            if stage != "close":  # a flow that never got its login answer is a failed flow
                self.fail_times.append(time.time_ns())
                self._fire(stage, began, exc)
        finally:
            if sock is not None:
                sock.close()


def _until(sock: Any, ws: WSConnection, kinds: tuple) -> Any:
    """Read until wsproto yields an event of one of ``kinds``; raise on rejection or EOF."""
    while True:
        for ev in ws.events():
            if isinstance(ev, kinds):
                if isinstance(ev, RejectConnection):
                    raise ConnectionError(f"handshake rejected: HTTP {ev.status_code}")
                return ev
            if isinstance(ev, CloseConnection):
                raise ConnectionError(f"closed by server ({ev.code})")
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by server")
        ws.receive_data(data)


def _on_init(environment: Any, **_kw: Any) -> None:
    path = os.environ.get("BENCH_SIGS", "")
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    environment.bare = {"sdkappid": int(doc["sdkappid"]), "users": [tuple(u) for u in doc["users"]],
                        "next": itertools.count(), "ok": array("q"), "fail": array("q"),
                        # like the harness (client.source_addresses: auto): spread connections over
                        # 127.0.0.2..254 so TIME_WAIT sockets do not exhaust one address's ports
                        "sources": [f"127.0.0.{i}" for i in range(2, 255)], "src_i": itertools.count()}


def _on_quit(environment: Any, **_kw: Any) -> None:
    out = os.environ.get("BENCH_OUT", "")
    shared = getattr(environment, "bare", None)
    if out and shared is not None:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump({"ok": shared["ok"].tolist(), "fail": shared["fail"].tolist()}, fh)


def install(ev: Any) -> None:
    """Register the two listeners (called once, below, as the repo's locustfile does)."""
    ev.init.add_listener(_on_init)
    ev.quitting.add_listener(_on_quit)


install(events)
