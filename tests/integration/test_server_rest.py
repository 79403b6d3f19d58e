"""REST v4 admin API (§6), /healthz and /biz/usersig on a real server."""
from __future__ import annotations

import asyncio
import time

import aiohttp

from harness.usersig import gen_usersig
from tests.integration.conftest import SDKAPPID, Chat, rest, run, uid


def test_healthz_and_biz_usersig(server):
    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.base_url}/healthz") as resp:
                assert resp.status == 200 and await resp.text() == "ok"
            async with http.get(f"{server.base_url}/biz/usersig", params={"userID": user, "expire": "120"}) as resp:
                assert resp.status == 200
                sig = (await resp.json())["userSig"]
            c = await Chat.open(http, server)
            login = await c.login(user, sig=sig)
            assert login["code"] == 0
            assert login["data"]["sigExpireAt"] - time.time() <= 121
            await c.close()
            for params in ({"userID": "bad id"}, {}, {"userID": user, "expire": "soon"},
                           {"userID": user, "expire": "-5"}):
                async with http.get(f"{server.base_url}/biz/usersig", params=params) as resp:
                    assert resp.status == 400
                    assert (await resp.json())["error"]

    run(body())


def test_rest_auth_errors(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            path, q = "openim/query_online_status", {"To_Account": ["x"]}
            assert (await rest(http, server, path, q))["ActionStatus"] == "OK"
            cases = [
                ({"sdkappid": ""}, 60012),
                ({"sdkappid": "abc"}, 60006),
                ({"sdkappid": str(SDKAPPID + 1)}, 60006),
                ({"identifier": "not_admin", "usersig": server.sig("not_admin")}, 60010),
                ({"usersig": ""}, 70002),
                ({"usersig": "garbage"}, 70003),
                ({"usersig": gen_usersig(SDKAPPID, "wrong", server.admin)}, 70009),
                ({"usersig": server.sig("someone")}, 70013),
                ({"usersig": gen_usersig(SDKAPPID, server.secret, server.admin, 5, now=int(time.time()) - 100)}, 70001),
            ]
            for override, code in cases:
                r = await rest(http, server, path, q, **override)
                assert (r["ActionStatus"], r["ErrorCode"]) == ("FAIL", code), (override, r)
                assert r["ErrorInfo"]

    run(body())


def test_rest_bad_requests_fail_cleanly(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            r = await rest(http, server, "im_open_login_svc/teleport", {"UserID": "x"})
            assert (r["ActionStatus"], r["ErrorCode"]) == ("FAIL", 60009)
            for raw in (b"{not json", b"[1,2]", b"\xff\xfe", b""):
                r = await rest(http, server, "im_open_login_svc/kick", raw)
                assert (r["ActionStatus"], r["ErrorCode"]) == ("FAIL", 60003), raw
            for path, bad in (("im_open_login_svc/kick", {}), ("im_open_login_svc/kick", {"UserID": 5}),
                              ("im_open_login_svc/account_import", {"UserID": "bad id"}),
                              ("openim/query_online_status", {"To_Account": "alice"}),
                              ("openim/query_online_status", {"To_Account": ["a"], "IsNeedDetail": 7}),
                              ("openim/query_online_status", {"To_Account": [f"u{i}" for i in range(501)]}),
                              ("im_open_login_svc/multiaccount_import",
                               {"AccountList": [{"UserID": f"u{i}"} for i in range(101)]})):
                r = await rest(http, server, path, bad)
                assert (r["ActionStatus"], r["ErrorCode"]) == ("FAIL", 70402), (path, r)
                assert r["ErrorInfo"]
            async with http.get(f"{server.base_url}/v4/openim/query_online_status",
                                params=server.admin_query()) as resp:
                assert resp.status == 200 and (await resp.json())["ActionStatus"] == "FAIL"

    run(body())


def test_rest_kick_event_and_revocation(server):
    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            old_sig = server.sig(user)
            login = await c.login(user, sig=old_sig)
            assert login["code"] == 0
            r = await rest(http, server, "im_open_login_svc/kick", {"UserID": user})
            assert (r["ActionStatus"], r["ErrorCode"]) == ("OK", 0)
            ev = await c.next_event(timeout=2)
            assert ev == {"event": "kickedOffline", "sessionID": login["data"]["sessionID"],
                          "reason": "rest_kick", "by": None}
            assert (await c.status())["status"] == 3
            assert (await c.login(user, sig=old_sig))["code"] == 70052
            # a sig issued after the kick second works again
            await asyncio.sleep(1.05 - (time.time() % 1))
            assert (await c.login(user, sig=server.sig(user)))["code"] == 0
            assert await c.drain(0.2) == []
            # kicking a user without sessions is fine
            r = await rest(http, server, "im_open_login_svc/kick", {"UserID": uid()})
            assert r["ActionStatus"] == "OK"
            await c.close()

    run(body())


def test_query_online_status_agrees_with_sessions(server):
    async def body():
        on, off = uid("on"), uid("off")
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            assert (await c.login(on, platform="Mac"))["code"] == 0
            r = await rest(http, server, "openim/query_online_status",
                           {"To_Account": [on, off, "bad id"], "IsNeedDetail": 1})
            assert r["ActionStatus"] == "OK"
            by_user = {x["To_Account"]: x for x in r["QueryResult"]}
            assert by_user[on]["Status"] == "Online" and by_user[on]["Detail"] == [{"Platform": "Mac", "Status": "Online"}]
            assert by_user[off]["Status"] == "Offline" and by_user[off]["Detail"] == []
            assert [e["To_Account"] for e in r["ErrorList"]] == ["bad id"]
            plain = await rest(http, server, "openim/query_online_status", {"To_Account": [on]})
            assert "Detail" not in plain["QueryResult"][0]
            await c.request("logout")
            r = await rest(http, server, "openim/query_online_status", {"To_Account": [on]})
            assert r["QueryResult"][0]["Status"] == "Offline"
            await c.close()

    run(body())


def test_require_import_and_account_import(launch_server):
    srv = launch_server("--require-import")

    async def body():
        a, b, c_user = uid("imp"), uid("imp"), uid("imp")
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, srv)
            assert (await c.login(a))["code"] == 70107
            assert (await c.login(a, sig=""))["code"] == 70107  # import is checked before the sig
            assert (await c.login(a, sdkappid=1))["code"] == 70020  # ... and after the sdkAppID
            r = await rest(http, srv, "im_open_login_svc/account_import", {"UserID": a, "Nick": "A"})
            assert r["ActionStatus"] == "OK"
            r = await rest(http, srv, "im_open_login_svc/account_import", {"UserID": a})  # idempotent
            assert r["ActionStatus"] == "OK"
            assert (await c.login(a))["code"] == 0
            r = await rest(http, srv, "im_open_login_svc/multiaccount_import",
                           {"AccountList": [{"UserID": b}, {"UserID": "no good"}, {"UserID": c_user}]})
            assert r["ActionStatus"] == "OK" and r["FailAccounts"] == ["no good"]
            assert (await c.login(b))["code"] == 0
            q = await rest(http, srv, "openim/query_online_status", {"To_Account": [b, "never_imported"]})
            assert [x["To_Account"] for x in q["QueryResult"]] == [b]
            assert q["ErrorList"] == [{"To_Account": "never_imported", "ErrorCode": 70107}]
            await c.close()

    run(body())
