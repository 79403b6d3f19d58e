"""Seeded faults: each one must be visible to a client (that is what the harness checks catch)."""
from __future__ import annotations

import aiohttp

from tests.integration.conftest import Chat, rest, run, uid


async def _two_devices(http, srv, user):
    a = await Chat.open(http, srv)
    b = await Chat.open(http, srv)
    ra = await a.login(user, platform="Android", instance="old")
    rb = await b.login(user, platform="iOS", instance="new")
    assert ra["code"] == 0 and rb["code"] == 0
    return a, ra["data"], b, rb["data"]


def test_no_fault_baseline_one_kick(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            a, da, b, db = await _two_devices(http, server, uid())
            assert [e["sessionID"] for e in await a.drain(0.3)] == [da["sessionID"]]
            assert await b.drain(0.1) == []

    run(body())


def test_drop_kick_ends_session_without_event(launch_server):
    srv = launch_server("--fault", "drop_kick")

    async def body():
        async with aiohttp.ClientSession() as http:
            a, da, b, db = await _two_devices(http, srv, uid())
            assert db["kicked"] == [{"sessionID": da["sessionID"], "platform": "Android", "instanceID": "old"}]
            assert await a.drain(0.4) == []  # the evicted device never hears about it
            assert (await a.status())["status"] == 3

    run(body())


def test_dup_kick_sends_event_twice(launch_server):
    srv = launch_server("--fault", "dup_kick:1.0")

    async def body():
        async with aiohttp.ClientSession() as http:
            a, da, b, db = await _two_devices(http, srv, uid())
            events = await a.drain(0.4)
            assert len(events) == 2 and events[0] == events[1]
            assert events[0]["sessionID"] == da["sessionID"] and events[0]["reason"] == "multi_device"

    run(body())


def test_double_login_leaves_both_live(launch_server):
    srv = launch_server("--fault", "double_login")

    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            a, da, b, db = await _two_devices(http, srv, user)
            assert db["kicked"] == []
            assert await a.drain(0.3) == []
            assert (await a.status())["status"] == 1 and (await b.status())["status"] == 1
            q = await rest(http, srv, "openim/query_online_status", {"To_Account": [user], "IsNeedDetail": 1})
            assert len(q["QueryResult"][0]["Detail"]) == 2  # single_platform limit exceeded

    run(body())


def test_kick_newest_ends_the_new_login(launch_server):
    srv = launch_server("--fault", "kick_newest")

    async def body():
        async with aiohttp.ClientSession() as http:
            a, da, b, db = await _two_devices(http, srv, uid())
            assert db["kicked"] == []  # b got its success response first ...
            ev = await b.next_event(timeout=2)  # ... then is kicked by the old session
            assert ev == {"event": "kickedOffline", "sessionID": db["sessionID"], "reason": "multi_device",
                          "by": {"sessionID": da["sessionID"], "platform": "Android", "instanceID": "old"}}
            assert (await b.status())["status"] == 3
            assert (await a.status())["sessionID"] == da["sessionID"]
            assert await a.drain(0.2) == []

    run(body())


def test_fault_rate_zero_is_off(launch_server):
    srv = launch_server("--fault", "drop_kick:0", "--fault-seed", "3")

    async def body():
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                a, da, b, db = await _two_devices(http, srv, uid())
                assert len(await a.drain(0.3)) == 1

    run(body())
