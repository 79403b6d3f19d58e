"""§2 transport limits: binary, oversize and malformed frames, idle and handshake timeouts."""
from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.integration.conftest import Chat, rest, run, uid


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
