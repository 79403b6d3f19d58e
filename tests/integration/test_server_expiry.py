"""userSigExpired (§5): pushed once, near `time + expire + leeway`, only to sessions still live."""
from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.integration.conftest import Chat, run, uid

LEEWAY = 1  # the shared `server` fixture runs with --leeway-s 1


def test_expiry_push_on_time_and_only_for_live_sessions(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            live_user, gone_user, re_user = uid("exp"), uid("gone"), uid("re")
            now = int(time.time())
            short = dict(expire=12, now=now - 10)  # time + expire = now + 2
            moment = now + 2 + LEEWAY
            a = await Chat.open(http, server)
            b = await Chat.open(http, server)
            r = await Chat.open(http, server)
            la = await a.login(live_user, sig=server.sig(live_user, **short))
            assert la["code"] == 0 and la["data"]["sigExpireAt"] == now + 2
            assert (await b.login(gone_user, sig=server.sig(gone_user, **short)))["code"] == 0
            assert (await b.request("logout"))["code"] == 0
            assert (await r.login(re_user, sig=server.sig(re_user, **short)))["code"] == 0
            fresh = await r.login(re_user)  # relogin with a long-lived sig ends the short one
            assert fresh["code"] == 0

            ev = await a.next_event(timeout=moment - time.time() + 3)
            arrived = time.time()
            assert ev == {"event": "userSigExpired", "sessionID": la["data"]["sessionID"]}
            assert moment - 0.05 <= arrived <= moment + 2.0, (arrived - moment)
            assert (await a.status())["status"] == 3
            others = await asyncio.gather(a.drain(0.6), b.drain(0.6), r.drain(0.6))
            assert others == [[], [], []]  # exactly one event; none for ended / replaced sessions
            assert (await r.status())["sessionID"] == fresh["data"]["sessionID"]
            # the connection stays open and may log in again
            assert (await a.login(live_user))["code"] == 0
            for c in (a, b, r):
                await c.close()

    run(body())


def test_delay_expiry_fault_pushes_late(launch_server):
    srv = launch_server("--leeway-s", "0", "--fault", "delay_expiry", "--fault-delay-s", "2")

    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, srv)
            now = int(time.time())
            resp = await c.login(user, sig=srv.sig(user, expire=11, now=now - 10))
            assert resp["code"] == 0
            moment = now + 1
            await asyncio.sleep(max(0.0, moment - time.time()) + 0.6)
            assert (await c.status())["status"] == 1  # still "logged in" past the sig's end
            ev = await c.next_event(timeout=6)
            late = time.time() - moment
            assert ev["event"] == "userSigExpired"
            assert late >= 1.9
            await c.close()

    run(body())
