"""Fixtures for integration tests: the reference server as a real subprocess on loopback.

``launch_server(*flags)`` starts ``python -m harness.server --port 0 ...``, reads the first
stdout line (``listening on http://HOST:PORT``) and is stopped by pid in a finally.
``server`` is one shared default server for the whole session (tests use unique userIDs).
``Chat`` is a tiny WebSocket client (aiohttp) written from shared PROTOCOL.md.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import pytest

from harness.usersig import gen_usersig

ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-secret-key"
SDKAPPID = 1400000000
ADMIN = "administrator"
START_TIMEOUT_S = 20.0


class ServerProc:
    """A running server subprocess (stopped by its own pid only)."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int, ledger: Path | None,
                 stderr_path: Path, sdkappid: int = SDKAPPID, secret: str = SECRET, admin: str = ADMIN) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.ledger = ledger
        self.stderr_path = stderr_path
        self.sdkappid = sdkappid
        self.secret = secret
        self.admin = admin

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def sig(self, user: str, expire: int = 3600, now: int | None = None) -> str:
        """A valid UserSig for ``user`` (``now`` = issue time, Unix s)."""
        return gen_usersig(self.sdkappid, self.secret, user, expire, now=now)

    def admin_query(self, **override: Any) -> dict[str, str]:
        q = {"sdkappid": str(self.sdkappid), "identifier": self.admin, "usersig": self.sig(self.admin),
             "random": "12345", "contenttype": "json"}
        q.update({k: str(v) for k, v in override.items()})
        return q

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def ledger_rows(self) -> list[dict[str, Any]]:
        assert self.ledger is not None
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text(encoding="utf-8").splitlines() if line]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal our own process by pid and wait; SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def _start(args: tuple[str, ...], tmp: Path, with_ledger: bool, env_extra: dict[str, str] | None) -> ServerProc:
    ledger = tmp / f"ledger-{uuid.uuid4().hex[:8]}.jsonl" if with_ledger else None
    cmd = [sys.executable, "-m", "harness.targets.server", "--port", "0", *args]
    if ledger is not None:
        cmd += ["--ledger", str(ledger)]
    env = dict(os.environ)
    env["CHAT_SECRET_KEY"] = SECRET
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(env_extra or {})
    stderr_path = tmp / f"stderr-{uuid.uuid4().hex[:8]}.txt"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=ROOT, env=env)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        ready = sel.select(START_TIMEOUT_S)
        sel.close()
        line = proc.stdout.readline().decode() if ready else ""  # type: ignore[union-attr]
        if not line.startswith("listening on http://"):
            raise RuntimeError(f"server did not start: {line!r} {stderr_path.read_text()}")
        hostport = line.strip().removeprefix("listening on http://")
        host, _, port = hostport.rpartition(":")
        return ServerProc(proc, host, int(port), ledger, stderr_path)
    except BaseException:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        raise


@pytest.fixture(scope="session")
def server_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="server-it-") as d:
        yield Path(d)


@pytest.fixture
def launch_server(server_tmp: Path) -> Iterator[Callable[..., ServerProc]]:
    """Factory: ``launch_server(*flags, ledger=False, env=None)``; every server is stopped after the test."""
    started: list[ServerProc] = []

    def launch(*args: str, ledger: bool = False, env: dict[str, str] | None = None) -> ServerProc:
        srv = _start(tuple(args), server_tmp, ledger, env)
        started.append(srv)
        return srv

    try:
        yield launch
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture(scope="session")
def server(server_tmp: Path) -> Iterator[ServerProc]:
    """One default server (single_platform, leeway 1 s, ledger on) shared by the session."""
    srv = _start(("--leeway-s", "1"), server_tmp, True, None)
    try:
        yield srv
    finally:
        srv.stop()


_ids = itertools.count()


def uid(prefix: str = "u") -> str:
    """A userID unique in this test session (so tests can share one server)."""
    return f"{prefix}{os.getpid() % 1000}x{next(_ids)}"


# ---------------------------------------------------------------------------------------
# Protocol client
# ---------------------------------------------------------------------------------------


class Chat:
    """One WebSocket connection speaking PROTOCOL.md; events are queued as they arrive."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, srv: ServerProc) -> None:
        self.ws = ws
        self.srv = srv
        self.events: list[dict[str, Any]] = []
        self._seq = itertools.count(1)

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, srv: ServerProc) -> "Chat":
        ws = await http.ws_connect(srv.ws_url, autoclose=False, max_msg_size=0)
        return cls(ws, srv)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next JSON frame, or None when the connection closed."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data)
        return None

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def request(self, cmd: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        seq = next(self._seq)
        await self.ws.send_str(json.dumps({"cmd": cmd, "seq": seq, **fields}))
        return await self.response(seq, timeout)

    async def response(self, seq: int | None, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise ConnectionError(f"closed while waiting for seq {seq}: {self.ws.close_code}")
            if "event" in frame:
                self.events.append(frame)
            elif frame.get("seq") == seq:
                return frame

    async def login(self, user: str, sig: str | None = None, platform: str = "Android",
                    instance: str | None = None, sdkappid: int | None = None) -> dict[str, Any]:
        return await self.request(
            "login", sdkAppID=self.srv.sdkappid if sdkappid is None else sdkappid, userID=user,
            userSig=self.srv.sig(user) if sig is None else sig, platform=platform,
            instanceID=instance or f"{platform}-{uuid.uuid4().hex[:6]}")

    async def status(self) -> dict[str, Any]:
        return (await self.request("status"))["data"]

    async def drain(self, wait: float = 0.3) -> list[dict[str, Any]]:
        """Collect every event that arrives within ``wait`` s (plus those already queued)."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                frame = await self.recv(left)
            except asyncio.TimeoutError:
                break
            if frame is None:
                break
            if "event" in frame:
                self.events.append(frame)
        out, self.events = self.events, []
        return out

    async def next_event(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.events:
            return self.events.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame is None:
                raise ConnectionError("closed while waiting for an event")
            if "event" in frame:
                return frame

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; returns the close code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.ERROR):
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    await self.ws.close()
                return self.ws.close_code if msg.type is not aiohttp.WSMsgType.CLOSE else msg.data
        raise asyncio.TimeoutError("server did not close")

    async def close(self) -> None:
        await self.ws.close()


async def rest(http: aiohttp.ClientSession, srv: ServerProc, path: str, body: Any,
               **query: Any) -> dict[str, Any]:
    """POST /v4/<path> with the admin query (override keys via ``query``); returns the JSON."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with http.post(f"{srv.base_url}/v4/{path}", params=srv.admin_query(**query), data=data) as resp:
        assert resp.status == 200
        return await resp.json(content_type=None)


def run(coro: Any) -> Any:
    """Run one async test body (no pytest-asyncio in this project)."""
    return asyncio.run(coro)
