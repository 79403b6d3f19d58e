"""Multi-client login policies (§4): who gets kicked, with which reason and `by`."""
from __future__ import annotations

import asyncio

import aiohttp

from tests.integration.conftest import Chat, rest, run, uid


async def _login_in_turn(http, srv, user, devices):
    """Log each (platform, instance) in on its own connection, one after another."""
    out = []
    for platform, instance in devices:
        c = await Chat.open(http, srv)
        resp = await c.login(user, platform=platform, instance=instance)
        assert resp["code"] == 0, resp
        out.append((c, resp["data"]))
    return out


async def _alive(clients):
    """Which devices the server still sees as logged in, by index."""
    return [i for i, (c, _) in enumerate(clients) if (await c.status())["status"] == 1]


async def _kicks(clients):
    return list(await asyncio.gather(*(c.drain(0.2) for c, _ in clients)))


def _check_kick(events, victim, evictor, reason="multi_device"):
    assert events == [{"event": "kickedOffline", "sessionID": victim["sessionID"], "reason": reason,
                       "by": {"sessionID": evictor["sessionID"], "platform": evictor["platform"],
                              "instanceID": evictor["instanceID"]}}]


def test_single_platform_newest_wins_across_platforms(server):
    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            devs = await _login_in_turn(http, server, user, [("Android", "a"), ("Web", "w"), ("Mac", "m")])
            (_, a), (_, w), (_, m) = devs
            assert w["kicked"] == [{"sessionID": a["sessionID"], "platform": "Android", "instanceID": "a"}]
            assert m["kicked"] == [{"sessionID": w["sessionID"], "platform": "Web", "instanceID": "w"}]
            ev = await _kicks(devs)
            _check_kick(ev[0], a, w)
            _check_kick(ev[1], w, m)
            assert ev[2] == []
            assert await _alive(devs) == [2]
            for c, _ in devs:
                await c.close()

    run(body())


def test_dual_platform_native_group_and_web_instances(launch_server):
    srv = launch_server("--policy", "dual_platform", "--web-instances", "2")

    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            devs = await _login_in_turn(http, srv, user, [
                ("Android", "a"), ("Web", "w1"), ("Web", "w2"), ("iOS", "i"), ("Web", "w3")])
            data = [d for _, d in devs]
            assert [len(d["kicked"]) for d in data] == [0, 0, 0, 1, 1]
            ev = await _kicks(devs)
            _check_kick(ev[0], data[0], data[3])  # iOS evicts Android (one native group)
            _check_kick(ev[1], data[1], data[4])  # third Web evicts the oldest Web
            assert ev[2] == [] and ev[3] == [] and ev[4] == []
            assert await _alive(devs) == [2, 3, 4]
            q = await rest(http, srv, "openim/query_online_status", {"To_Account": [user], "IsNeedDetail": 1})
            assert sorted(d["Platform"] for d in q["QueryResult"][0]["Detail"]) == ["Web", "Web", "iOS"]
            for c, _ in devs:
                await c.close()

    run(body())


def test_triple_platform_mobile_desktop_web_groups(launch_server):
    srv = launch_server("--policy", "triple_platform")

    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            devs = await _login_in_turn(http, srv, user, [
                ("Android", "a"), ("Windows", "win"), ("Web", "w"), ("iPad", "pad"), ("Linux", "lx")])
            data = [d for _, d in devs]
            ev = await _kicks(devs)
            _check_kick(ev[0], data[0], data[3])  # iPad evicts Android (mobile group)
            _check_kick(ev[1], data[1], data[4])  # Linux evicts Windows (desktop group)
            assert ev[2] == [] and ev[3] == [] and ev[4] == []
            assert await _alive(devs) == [2, 3, 4]
            for c, _ in devs:
                await c.close()

    run(body())


def test_multi_platform_native_instances_and_same_instance(launch_server):
    srv = launch_server("--policy", "multi_platform", "--native-instances", "2")

    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            devs = await _login_in_turn(http, srv, user, [
                ("Android", "a1"), ("Android", "a2"), ("iOS", "i1"), ("Web", "w1"), ("Android", "a3"),
                ("iOS", "i1")])
            data = [d for _, d in devs]
            ev = await _kicks(devs)
            _check_kick(ev[0], data[0], data[4])  # third Android evicts the oldest Android
            _check_kick(ev[2], data[2], data[5], reason="same_instance")  # same instanceID replaces
            assert data[5]["kicked"] == [{"sessionID": data[2]["sessionID"], "platform": "iOS", "instanceID": "i1"}]
            assert ev[1] == [] and ev[3] == [] and ev[4] == [] and ev[5] == []
            assert await _alive(devs) == [1, 3, 4, 5]
            for c, _ in devs:
                await c.close()

    run(body())


def test_same_instance_replaces_under_single_platform(server):
    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            devs = await _login_in_turn(http, server, user, [("Android", "tab-1"), ("Android", "tab-1")])
            ev = await _kicks(devs)
            _check_kick(ev[0], devs[0][1], devs[1][1], reason="same_instance")
            assert ev[1] == []
            for c, _ in devs:
                await c.close()

    run(body())


def test_twenty_concurrent_logins_leave_exactly_one(server):
    async def race(http):
        user = uid("race")
        clients = [await Chat.open(http, server) for _ in range(20)]
        platforms = ["Android", "iOS", "Windows", "Web", "Mac"]
        sigs = [server.sig(user) for _ in clients]
        resps = await asyncio.gather(*(
            c.login(user, sig=s, platform=platforms[i % 5], instance=f"d{i}") for i, (c, s) in enumerate(zip(clients, sigs))))
        assert all(r["code"] == 0 for r in resps)
        events = await asyncio.gather(*(c.drain(0.3) for c in clients))
        statuses = await asyncio.gather(*(c.status() for c in clients))
        alive = [i for i, st in enumerate(statuses) if st["status"] == 1]
        assert len(alive) == 1
        kicked_events = [e for evs in events for e in evs]
        assert len(kicked_events) == 19
        assert all(e["reason"] == "multi_device" for e in kicked_events)
        assert events[alive[0]] == []
        # every ended session got exactly one event, and it was its own
        ended = {resps[i]["data"]["sessionID"] for i in range(20) if i != alive[0]}
        assert sorted(e["sessionID"] for e in kicked_events) == sorted(ended)
        # the kicked lists of all logins together name each ended session once
        named = [k["sessionID"] for r in resps for k in r["data"]["kicked"]]
        assert sorted(named) == sorted(ended)
        q = await rest(http, server, "openim/query_online_status", {"To_Account": [user], "IsNeedDetail": 1})
        assert len(q["QueryResult"][0]["Detail"]) == 1
        await asyncio.gather(*(c.close() for c in clients))

    async def body():
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                await race(http)

    run(body())


# ---- max_sessions and unlimited ------------------------------------------------------------------------


def test_max_sessions_flag_out_of_range_exits_2_with_one_line():
    import os
    import subprocess
    import sys

    from tests.integration.conftest import ROOT, SECRET

    env = {**os.environ, "CHAT_SECRET_KEY": SECRET}
    for bad in ("0", "101"):
        res = subprocess.run([sys.executable, "-m", "harness.server", "--port", "0", "--policy", "max_sessions",
                              "--max-sessions", bad], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
        assert res.returncode == 2 and res.stdout == ""
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "--max-sessions" in lines[0] and "1..100" in lines[0], res.stderr


def test_max_sessions_keeps_the_newest_n_across_platforms(launch_server):
    srv = launch_server("--policy", "max_sessions", "--max-sessions", "3", ledger=True)

    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            devs = await _login_in_turn(http, srv, user, [
                ("Android", "a"), ("Web", "w"), ("Mac", "m"), ("iPad", "p"), ("Web", "w2")])
            data = [d for _, d in devs]
            assert [len(d["kicked"]) for d in data] == [0, 0, 0, 1, 1]
            ev = await _kicks(devs)
            _check_kick(ev[0], data[0], data[3])  # the 4th login evicts the oldest, whatever its platform
            _check_kick(ev[1], data[1], data[4])
            assert ev[2:] == [[], [], []]
            assert await _alive(devs) == [2, 3, 4]
            # same instance still replaces, even with room left
            c = await Chat.open(http, srv)
            again = await c.login(user, platform="Mac", instance="m")
            assert again["code"] == 0
            assert again["data"]["kicked"] == [{"sessionID": data[2]["sessionID"], "platform": "Mac", "instanceID": "m"}]
            _check_kick(await devs[2][0].drain(0.2), data[2], again["data"], reason="same_instance")
            q = await rest(http, srv, "openim/query_online_status", {"To_Account": [user], "IsNeedDetail": 1})
            assert sorted(d["Platform"] for d in q["QueryResult"][0]["Detail"]) == ["Mac", "Web", "iPad"]
            await c.close()
            for cl, _ in devs:
                await cl.close()

    run(body())
    _checks_clean(srv, "max_sessions", max_sessions=3)


def test_max_sessions_concurrent_logins_leave_exactly_n(launch_server):
    srv = launch_server("--policy", "max_sessions", "--max-sessions", "4")

    async def body():
        user = uid("race")
        async with aiohttp.ClientSession() as http:
            clients = [await Chat.open(http, srv) for _ in range(12)]
            platforms = ["Android", "iOS", "Windows", "Web", "Mac", "Linux"]
            sigs = [srv.sig(user) for _ in clients]
            resps = await asyncio.gather(*(c.login(user, sig=s, platform=platforms[i % 6], instance=f"d{i}")
                                           for i, (c, s) in enumerate(zip(clients, sigs))))
            assert all(r["code"] == 0 for r in resps)
            events = await asyncio.gather(*(c.drain(0.3) for c in clients))
            statuses = await asyncio.gather(*(c.status() for c in clients))
            assert sum(st["status"] == 1 for st in statuses) == 4
            assert sum(len(e) for e in events) == 8
            assert all(e["reason"] == "multi_device" for evs in events for e in evs)
            q = await rest(http, srv, "openim/query_online_status", {"To_Account": [user], "IsNeedDetail": 1})
            assert len(q["QueryResult"][0]["Detail"]) == 4
            await asyncio.gather(*(c.close() for c in clients))

    run(body())


def test_unlimited_keeps_every_instance_and_same_instance_replaces(launch_server):
    srv = launch_server("--policy", "unlimited", "--max-sessions", "1", "--web-instances", "1", ledger=True)

    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            specs = [("Android", "a"), ("Android", "a2"), ("Web", "w1"), ("Web", "w2"), ("iOS", "i"), ("Mac", "m")]
            devs = await _login_in_turn(http, srv, user, specs)
            assert [d["kicked"] for _, d in devs] == [[]] * 6  # max_sessions/web_instances do not apply
            assert await _kicks(devs) == [[]] * 6
            assert await _alive(devs) == [0, 1, 2, 3, 4, 5]
            q = await rest(http, srv, "openim/query_online_status", {"To_Account": [user], "IsNeedDetail": 1})
            assert len(q["QueryResult"][0]["Detail"]) == 6
            # a login with a live session's instanceID replaces exactly that session
            c = await Chat.open(http, srv)
            again = await c.login(user, platform="Web", instance="w1")
            assert again["code"] == 0
            assert again["data"]["kicked"] == [{"sessionID": devs[2][1]["sessionID"], "platform": "Web",
                                                "instanceID": "w1"}]
            ev = await _kicks(devs)
            _check_kick(ev[2], devs[2][1], again["data"], reason="same_instance")
            assert [e for i, e in enumerate(ev) if i != 2] == [[]] * 5
            assert await _alive(devs) == [0, 1, 3, 4, 5]
            await c.close()
            for cl, _ in devs:
                await cl.close()

    run(body())
    _checks_clean(srv, "unlimited")


def test_unlimited_concurrent_logins_all_survive(launch_server):
    srv = launch_server("--policy", "unlimited")

    async def body():
        user = uid("race")
        async with aiohttp.ClientSession() as http:
            clients = [await Chat.open(http, srv) for _ in range(10)]
            sigs = [srv.sig(user) for _ in clients]
            resps = await asyncio.gather(*(c.login(user, sig=s, platform="Android", instance=f"d{i}")
                                           for i, (c, s) in enumerate(zip(clients, sigs))))
            assert all(r["code"] == 0 and r["data"]["kicked"] == [] for r in resps)
            assert await asyncio.gather(*(c.drain(0.3) for c in clients)) == [[]] * 10
            statuses = await asyncio.gather(*(c.status() for c in clients))
            assert all(st["status"] == 1 for st in statuses)
            await asyncio.gather(*(c.close() for c in clients))
            # concurrent logins with one instanceID leave only one
            same = [await Chat.open(http, srv) for _ in range(5)]
            user2 = uid("race")
            resps = await asyncio.gather(*(c.login(user2, sig=srv.sig(user2), platform="iOS", instance="same")
                                           for c in same))
            assert all(r["code"] == 0 for r in resps)
            events = await asyncio.gather(*(c.drain(0.3) for c in same))
            assert all(e["reason"] == "same_instance" for evs in events for e in evs)
            statuses = await asyncio.gather(*(c.status() for c in same))
            assert sum(st["status"] == 1 for st in statuses) == 1
            await asyncio.gather(*(c.close() for c in same))

    run(body())


def _checks_clean(srv, policy: str, **params) -> None:
    """The server's own ledger passes policy_limit and last_login_wins under the same policy."""
    from harness.results.checks import CheckParams, last_login_wins, policy_limit

    srv.stop()
    p = CheckParams(policy=policy, **params)
    rows = srv.ledger_rows()
    assert any(r["event"] == "end" and r["reason"] == "same_instance" for r in rows)
    assert policy_limit([], params=p, ledger=rows).violations == 0
    assert last_login_wins([], params=p, ledger=rows).violations == 0
    if policy == "unlimited":  # judged as single_platform the same ledger is far over the limit
        assert policy_limit([], params=CheckParams(), ledger=rows).violations > 0
