"""The reference server's shell: aiohttp routes, the WebSocket loop, the sweeper, lifecycle.

All decisions live in :class:`harness.targets.server.core.Hub` (sync, sans-IO). This module only
moves frames: it hands each text frame to the hub and writes the returned outbox in order
(uncompressed aiohttp writes are synchronous up to flow control, so frames leave in the
order the hub decided). One task per connection (aiohttp's handler), one sweeper task,
one ledger-flush task; no per-session timers.

Routes (one port): ``GET /ws`` (WebSocket), ``POST /v4/{service}/{command}`` (REST v4),
``GET /healthz``, ``GET /biz/usersig?userID=&expire=``.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from typing import Any, Callable

from aiohttp import WSCloseCode, WSMsgType, web

from harness.protocol import USER_ID_RE
from harness.targets.server.core import Hub, Outbox
from harness.targets.server.ledger import Ledger
from harness.targets.server.rest import fail, handle_rest
from harness.targets.server.settings import ServerSettings
from harness.targets.server.wsguard import GuardedWebSocketResponse
from harness.usersig import gen_usersig

#: How long a server-initiated close waits for the client's close frame (s), and how long a
#: lingering close (after a refused frame) then waits for the client to close TCP (s).
CLOSE_TIMEOUT_S = 2.0
#: Ledger flush period (s); RESULTS/PROTOCOL ask for at most 0.5 s.
LEDGER_FLUSH_S = 0.5
#: Default lifetime of sigs issued by /biz/usersig (s).
BIZ_DEFAULT_EXPIRE_S = 86400
BIZ_MAX_EXPIRE_S = 2**31 - 1

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

HUB_KEY: web.AppKey[Hub] = web.AppKey("hub", Hub)
#: WebSockets in a lingering close (so that shutdown can cut them short).
LINGERING_KEY: web.AppKey[set[GuardedWebSocketResponse]] = web.AppKey("lingering", set)


def _log(message: str) -> None:
    print(f"harness.targets.server: {message}", file=sys.stderr, flush=True)


async def deliver(out: Outbox) -> None:
    """Write each (conn, frame) in order; frames to closed/closing sockets are dropped."""
    for conn, frame in out:
        if conn.closed:
            continue
        try:
            await conn.sink.send_str(frame)
        except (ConnectionError, RuntimeError):
            pass


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(text=_dumps(obj), status=status, content_type="application/json")


# ---------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """One connection: frames strictly in order; §2 limits; session ends when it closes.

    Unmasked client frames close 1002; closes after a refused frame linger (see wsguard.py).
    """
    hub = request.app[HUB_KEY]
    st = hub.settings
    # aiohttp refuses frames >= max_msg_size; the contract refuses frames > max_frame_bytes.
    ws = GuardedWebSocketResponse(max_msg_size=st.max_frame_bytes + 1, compress=False, timeout=CLOSE_TIMEOUT_S,
                                  linger_s=CLOSE_TIMEOUT_S)
    if not ws.can_prepare(request).ok:
        return _json({"error": "expected a WebSocket upgrade request"}, status=400)
    try:
        await ws.prepare(request)
    except (ConnectionResetError, ConnectionError, RuntimeError):
        # the client went away during the handshake (e.g. a load tool stopping): nothing to do;
        # the half-prepared response only closes the socket (GuardedWebSocketResponse.write_eof)
        return ws
    conn = hub.connect(ws)
    idle = st.idle_timeout_s
    close_code: int | None = None
    close_msg = b""
    try:
        while True:
            try:
                msg = await ws.receive(timeout=idle)
            except asyncio.TimeoutError:
                close_code, close_msg = WSCloseCode.GOING_AWAY, b"idle timeout"
                break
            kind = msg.type
            if kind is WSMsgType.TEXT:
                try:
                    out, too_many_bad = hub.handle_text(conn, msg.data)
                except Exception:  # a bug must not take the server down; say so and close
                    _log("internal error handling a frame:\n" + traceback.format_exc())
                    close_code, close_msg = WSCloseCode.INTERNAL_ERROR, b"internal error"
                    break
                await deliver(out)
                if too_many_bad:
                    close_code, close_msg = WSCloseCode.POLICY_VIOLATION, b"too many malformed frames"
                    break
            elif kind is WSMsgType.BINARY:
                close_code, close_msg = WSCloseCode.UNSUPPORTED_DATA, b"binary frames are not supported"
                break
            else:  # CLOSE / CLOSING / CLOSED / ERROR (1009 too big, 1002 unmasked...: close already sent)
                break
    finally:
        hub.disconnect(conn)
    if close_code is not None and not ws.closed:
        try:
            await ws.close(code=close_code, message=close_msg)
        except (ConnectionError, RuntimeError):
            pass
    if ws.lingering:  # wait here: aiohttp closes the socket once this handler returns
        lingering = request.app[LINGERING_KEY]
        lingering.add(ws)
        try:
            await ws.lingered()
        finally:
            lingering.discard(ws)
    return ws


async def rest_handler(request: web.Request) -> web.Response:
    """REST v4: always HTTP 200 JSON with ActionStatus/ErrorCode/ErrorInfo."""
    hub = request.app[HUB_KEY]
    if request.method != "POST":
        return _json(fail(60002, "REST v4 calls must use POST."))
    try:
        body = await request.read()
    except web.HTTPException as exc:
        return _json(fail(60002, f"Could not read the request body ({exc.reason})."))
    try:
        result, out = handle_rest(hub, request.match_info["service"], request.match_info["command"],
                                  request.query, body, time.time())
    except Exception:
        _log("internal error handling a REST call:\n" + traceback.format_exc())
        return _json(fail(70500, "Internal server error."))
    await deliver(out)
    return _json(result)


async def healthz_handler(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def biz_usersig_handler(request: web.Request) -> web.Response:
    """Stand-in for the app's business server: issue a UserSig for ``userID`` (``expire`` s)."""
    hub = request.app[HUB_KEY]
    user = request.query.get("userID", "")
    if USER_ID_RE.fullmatch(user) is None:
        return _json({"error": "userID must be 1-32 characters of A-Z a-z 0-9 _ -."}, status=400)
    raw = request.query.get("expire", "")
    expire = BIZ_DEFAULT_EXPIRE_S
    if raw:
        try:
            expire = int(raw)
        except ValueError:
            expire = -1
        if not 1 <= expire <= BIZ_MAX_EXPIRE_S:
            return _json({"error": f"expire must be an integer number of seconds 1..{BIZ_MAX_EXPIRE_S}."},
                         status=400)
    st = hub.settings
    return _json({"userSig": gen_usersig(st.sdkappid, st.secret_key, user, expire)})


def build_app(hub: Hub) -> web.Application:
    """The aiohttp application serving ``hub`` (no background tasks; see :func:`serve`)."""
    app = web.Application(client_max_size=1024 * 1024)
    app[HUB_KEY] = hub
    app[LINGERING_KEY] = set()
    app.router.add_get("/ws", ws_handler)
    app.router.add_route("*", "/v4/{service}/{command}", rest_handler)
    app.router.add_get("/healthz", healthz_handler)
    app.router.add_get("/biz/usersig", biz_usersig_handler)
    return app


# ---------------------------------------------------------------------------------------
# Background loops and lifecycle
# ---------------------------------------------------------------------------------------


async def sweeper(hub: Hub, interval_s: float) -> None:
    """Every ``interval_s`` s: end expired sessions and push userSigExpired."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            out = hub.sweep(time.time())
        except Exception:
            _log("internal error in the expiry sweeper:\n" + traceback.format_exc())
            continue
        if out:
            await deliver(out)


async def ledger_flusher(ledger: Ledger, interval_s: float = LEDGER_FLUSH_S) -> None:
    """Write buffered ledger rows every ``interval_s`` s."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            ledger.flush()
        except OSError as exc:
            _log(f"cannot write the ledger {ledger.path}: {exc.strerror or exc}")


async def serve(settings: ServerSettings, stop: asyncio.Event,
                ready: Callable[[str, int], None] | None = None) -> None:
    """Run the server until ``stop`` is set, then shut down cleanly.

    ``ready(host, port)`` is called once the socket is bound (``settings.port`` 0 = a free
    port). Shutdown: close every WebSocket (1001), cut lingering closes short, stop the
    listener, end the remaining sessions (``disconnect``), flush and close the ledger.
    Raises OSError if binding fails.
    """
    ledger = Ledger(settings.ledger) if settings.ledger else None
    hub = Hub(settings, ledger=ledger)
    app = build_app(hub)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=settings.handshake_timeout_s)
    tasks: list[asyncio.Task[None]] = []
    try:
        await runner.setup()
        host = "127.0.0.1" if settings.host == "localhost" else settings.host  # one socket, one port
        site = web.TCPSite(runner, host, settings.port, backlog=4096)
        await site.start()
        port = int(runner.addresses[0][1])
        tasks.append(asyncio.create_task(sweeper(hub, settings.sweep_interval_s)))
        if ledger is not None:
            tasks.append(asyncio.create_task(ledger_flusher(ledger)))
        if ready is not None:
            ready(host, port)
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        socks = [c.sink for c in list(hub.conns) if c.sink is not None]
        for conn in list(hub.conns):
            hub.disconnect(conn)
        if socks:
            await asyncio.wait([asyncio.ensure_future(_close_quietly(ws)) for ws in socks],
                               timeout=CLOSE_TIMEOUT_S + 1)
        for ws in list(app[LINGERING_KEY]):
            ws.end_linger()
        await runner.cleanup()
        hub.end_all("disconnect")
        if ledger is not None:
            ledger.close()


async def _close_quietly(ws: web.WebSocketResponse) -> None:
    try:
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
    except Exception:  # the peer may already be gone; shutdown goes on
        pass
