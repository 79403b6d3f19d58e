"""§2 transport limits: binary, oversize and malformed frames, idle and handshake timeouts."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import aiohttp

from bench.hostile import OP_TEXT, RawWS, encode_frame
from tests.integration.conftest import SDKAPPID, Chat, rest, run, uid


def test_binary_frame_closes_1003_and_ends_session(server):
    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            assert (await c.login(user))["code"] == 0
            await c.ws.send_bytes(b'{"cmd": "status", "seq": 1}')
            assert await c.wait_closed() == 1003
            q = await rest(http, server, "openim/query_online_status", {"To_Account": [user]})
            assert q["QueryResult"][0]["Status"] == "Offline"

    run(body())


def test_oversize_frame_closes_1009(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            def frame(seq: int, size: int) -> str:
                head = f'{{"cmd":"status","seq":{seq},"pad":"'
                return head + "x" * (size - len(head) - 2) + '"}'

            await c.send_raw(frame(1, 65536))  # exactly the 64 KiB limit: answered
            assert (await c.recv())["code"] == 0
            await c.send_raw(frame(2, 65537))
            assert await c.wait_closed() == 1009

    run(body())


def test_malformed_frames_in_a_row_close_1008(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            for _ in range(19):
                await c.send_raw("{")
                assert (await c.recv())["code"] == 6017
            assert (await c.status())["status"] == 3  # a good frame resets the count
            for i in range(20):
                await c.send_raw(f'{{"cmd": "nope", "seq": {i}}}')
                r = await c.recv()
                if i < 19:
                    assert r == {"seq": i, "code": 6017, "desc": r["desc"]}
            assert await c.wait_closed() == 1008

    run(body())


def test_idle_close_1001_and_heartbeat_keeps_alive(launch_server):
    srv = launch_server("--idle-timeout-s", "0.6")

    async def body():
        async with aiohttp.ClientSession() as http:
            busy = await Chat.open(http, srv)
            idle = await Chat.open(http, srv)
            for _ in range(6):  # 1.2 s of traffic, well past the idle limit
                await asyncio.sleep(0.2)
                assert (await busy.request("heartbeat"))["code"] == 0
            assert await idle.wait_closed(timeout=3) == 1001
            assert not busy.ws.closed
            await busy.close()

    run(body())


def test_handshake_timeout_closes_silent_tcp(launch_server):
    srv = launch_server("--handshake-timeout-s", "0.5")

    async def silent(data: bytes) -> float:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        t0 = time.monotonic()
        if data:
            writer.write(data)
            await writer.drain()
        got = await asyncio.wait_for(reader.read(1024), timeout=5)
        writer.close()
        assert got == b""  # closed without an answer
        return time.monotonic() - t0

    async def body():
        await asyncio.gather(silent(b""), silent(b"GET /ws HTTP/1.1\r\nHost: x\r\n"))
        async with aiohttp.ClientSession() as http:  # a completed handshake is not affected
            c = await Chat.open(http, srv)
            await asyncio.sleep(1.0)
            assert (await c.status())["status"] == 3
            await c.close()

    run(body())


def test_plain_http_on_ws_path_is_refused(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            async with http.get(server.ws_url.replace("ws://", "http://")) as resp:
                assert resp.status == 400

    run(body())


def _login_frame(srv, user: str, seq: int = 1) -> bytes:
    return encode_frame(OP_TEXT, json.dumps({"cmd": "login", "seq": seq, "sdkAppID": SDKAPPID, "userID": user,
                                             "userSig": srv.sig(user), "platform": "iOS",
                                             "instanceID": "t"}).encode())


def test_unmasked_frame_after_good_ones_closes_1002_and_ends_the_session(server):
    """Frames before the unmasked one (same TCP segment) are answered in order, then 1002."""
    user = uid("unmasked")

    async def body():
        ws = await RawWS.open(server.host, server.port)
        try:
            await ws.send(_login_frame(server, user)
                          + encode_frame(OP_TEXT, b'{"cmd":"status","seq":2}', mask=False))
            got = [await ws.recv(5), await ws.recv(5)]
        finally:
            ws.close()
        async with aiohttp.ClientSession() as http:
            q = await rest(http, server, "openim/query_online_status", {"To_Account": [user]})
        return got, q["QueryResult"][0]["Status"]

    (first, second), status = run(body())
    assert first[0] == "text" and json.loads(first[1])["code"] == 0
    assert second == ("close", 1002)
    assert status == "Offline"


def test_unmasked_frame_in_the_handshake_packet_closes_1002(server):
    """Bytes that arrive together with the upgrade request are checked too."""

    async def body():
        reader, writer = await asyncio.open_connection(server.host, server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
                     + encode_frame(OP_TEXT, b'{"cmd":"status","seq":1}', mask=False))
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        try:
            return await RawWS(reader, writer).recv(5)
        finally:
            writer.close()

    assert run(body()) == ("close", 1002)


def test_oversize_frame_close_is_clean_while_the_client_keeps_sending(server):
    """After close 1009 the server half-closes and keeps reading: the client reads the close
    frame, then a clean end of stream (FIN, not a reset), even while it is still sending."""

    async def body():
        ws = await RawWS.open(server.host, server.port)
        try:
            frame = encode_frame(OP_TEXT, b"y" * 200_000)
            await ws.send(frame[:70_000])
            closed = await ws.recv(5)
            ws.writer.write(frame[70_000:])          # the rest of the frame, after the close
            await ws.writer.drain()
            rest_of_stream = await asyncio.wait_for(ws.reader.read(), 5)   # raises on a reset
        finally:
            ws.close()
        return closed, rest_of_stream

    closed, rest_of_stream = run(body())
    assert closed == ("close", 1009)
    assert rest_of_stream == b""


def test_fragmented_headers_and_frames_split_across_writes_are_served(server):
    """Masked frames cut at every byte boundary (header, key, payload) still get answers."""
    user = uid("split")

    async def body():
        ws = await RawWS.open(server.host, server.port)
        try:
            data = _login_frame(server, user) + encode_frame(OP_TEXT, b'{"cmd":"status","seq":2}')
            for i in range(len(data)):
                ws.writer.write(data[i:i + 1])
                if i % 16 == 0:
                    await ws.writer.drain()
                    await asyncio.sleep(0)
            await ws.writer.drain()
            return [json.loads((await ws.recv(5))[1]) for _ in range(2)]
        finally:
            ws.close()

    login, status = run(body())
    assert login["code"] == 0
    assert status["seq"] == 2 and status["data"]["status"] == 1 and status["data"]["userID"] == user
