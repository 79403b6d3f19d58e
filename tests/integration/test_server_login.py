"""Login / logout / heartbeat / status on a real server: every §1 and §3 code, switching, relogin."""
from __future__ import annotations

import time

import aiohttp

from harness.usersig import gen_usersig
from tests.integration.conftest import SDKAPPID, Chat, rest, run, uid


def test_login_success_data_and_status(server):
    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            assert (await c.status())["status"] == 3
            sig_time = int(time.time())
            resp = await c.login(user, sig=server.sig(user, 600, now=sig_time), platform="iOS", instance="phone-1")
            assert resp["code"] == 0, resp
            data = resp["data"]
            assert data["userID"] == user and data["platform"] == "iOS" and data["instanceID"] == "phone-1"
            assert data["sigExpireAt"] == sig_time + 600
            assert data["kicked"] == []
            assert abs(data["loginTime"] - time.time() * 1000) < 60_000
            st = await c.status()
            assert st == {"status": 1, "userID": user, "sessionID": data["sessionID"],
                          "platform": "iOS", "instanceID": "phone-1"}
            hb = await c.request("heartbeat")
            assert hb["code"] == 0 and isinstance(hb["data"]["serverTime"], int)
            out = await c.request("logout")
            assert out["code"] == 0
            assert (await c.status()) == {"status": 3, "userID": None, "sessionID": None,
                                          "platform": None, "instanceID": None}
            again = await c.request("logout")
            assert again["code"] == 6014
            await c.close()

    run(body())


def test_usersig_codes_in_section1_order(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            user = uid()
            now = int(time.time())
            cases = [
                ("", 70002),
                ("not-a-sig!!", 70003),
                ("x" * 5000, 70003),
                (gen_usersig(SDKAPPID + 1, server.secret, user, 600), 70014),
                (gen_usersig(SDKAPPID, server.secret, "someone_else", 600), 70013),
                (gen_usersig(SDKAPPID, "wrong-secret", user, 600), 70009),
                (gen_usersig(SDKAPPID, server.secret, user, 10, now=now - 100), 70001),
                (gen_usersig(SDKAPPID, server.secret, user, 600, now=now + 300), 70003),
                # order: sdkappid mismatch is reported before the identifier mismatch
                (gen_usersig(SDKAPPID + 1, server.secret, "someone_else", 600), 70014),
                # order: a bad HMAC is reported before expiry
                (gen_usersig(SDKAPPID, "wrong-secret", user, 10, now=now - 100), 70009),
            ]
            for sig, code in cases:
                resp = await c.login(user, sig=sig)
                assert resp["code"] == code, (sig[:40], resp)
                assert resp["desc"]
            assert (await c.status())["status"] == 3
            await c.close()

    run(body())


def test_field_codes_and_check_order(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            user = uid()
            good = server.sig(user)
            base = {"sdkAppID": SDKAPPID, "userID": user, "userSig": good, "platform": "Android", "instanceID": "d1"}
            cases = [
                ({"userID": "bad id"}, 7003),
                ({"userID": "x" * 33}, 7003),
                ({"userID": ""}, 7003),
                ({"platform": "Symbian"}, 6017),
                ({"instanceID": ""}, 6017),
                ({"instanceID": "a/b"}, 6017),
                ({"instanceID": "x" * 65}, 6017),
                ({"sdkAppID": SDKAPPID + 5}, 70020),
                # order: userID before platform, platform before sdkAppID, sdkAppID before the sig
                ({"userID": "bad id", "platform": "Symbian"}, 7003),
                ({"platform": "Symbian", "sdkAppID": 1}, 6017),
                ({"sdkAppID": 1, "userSig": ""}, 70020),
            ]
            for change, code in cases:
                resp = await c.request("login", **{**base, **change})
                assert resp["code"] == code, (change, resp)
            ok = await c.request("login", **base)
            assert ok["code"] == 0
            await c.close()

    run(body())


def test_malformed_frames_get_6017_and_connection_stays(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            await c.send_raw("not json")
            r = await c.recv()
            assert r["code"] == 6017 and r["seq"] is None and r["desc"]
            await c.send_raw("[1, 2]")
            assert (await c.recv())["seq"] is None
            await c.send_raw('{"cmd": "status", "seq": "7"}')
            assert (await c.recv())["seq"] is None
            await c.send_raw('{"cmd": "fly", "seq": 42}')
            r = await c.recv()
            assert r["seq"] == 42 and r["code"] == 6017
            # still usable
            assert (await c.status())["status"] == 3
            await c.close()

    run(body())


def test_switch_account_without_logout(server):
    async def body():
        alice, bob = uid("alice"), uid("bob")
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            a = await c.login(alice)
            b = await c.login(bob)
            assert a["code"] == 0 and b["code"] == 0
            assert b["data"]["kicked"] == []  # the switch is not an eviction
            st = await c.status()
            assert st["userID"] == bob and st["sessionID"] == b["data"]["sessionID"]
            assert await c.drain(0.3) == []  # no event to anyone
            q = await rest(http, server, "openim/query_online_status", {"To_Account": [alice, bob]})
            states = {r["To_Account"]: r["Status"] for r in q["QueryResult"]}
            assert states == {alice: "Offline", bob: "Online"}
            await c.close()

    run(body())


def test_relogin_same_user_on_same_connection(server):
    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            first = await c.login(user, instance="dev-1")
            second = await c.login(user, instance="dev-1")
            assert first["code"] == 0 and second["code"] == 0
            assert second["data"]["sessionID"] != first["data"]["sessionID"]
            assert second["data"]["kicked"] == []  # relogin ends the old one silently
            assert await c.drain(0.3) == []
            assert (await c.status())["sessionID"] == second["data"]["sessionID"]
            await c.close()

    run(body())


def test_disconnect_ends_session(server):
    async def body():
        user = uid()
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, server)
            assert (await c.login(user))["code"] == 0
            await c.close()
            deadline = time.monotonic() + 3
            while True:
                q = await rest(http, server, "openim/query_online_status", {"To_Account": [user]})
                if q["QueryResult"][0]["Status"] == "Offline" or time.monotonic() > deadline:
                    break
            assert q["QueryResult"][0]["Status"] == "Offline"

    run(body())


def test_lockout_after_usersig_failures_only_for_that_user(launch_server):
    srv = launch_server("--lockout-failures", "3", "--lockout-window-s", "30", "--lockout-s", "30")

    async def body():
        victim, other = uid("victim"), uid("other")
        async with aiohttp.ClientSession() as http:
            c = await Chat.open(http, srv)
            # non-UserSig failures do not count
            for _ in range(4):
                assert (await c.login(victim, sdkappid=1))["code"] == 70020
            assert (await c.login(victim))["code"] == 0
            assert (await c.request("logout"))["code"] == 0
            for _ in range(3):
                assert (await c.login(victim, sig=gen_usersig(SDKAPPID, "bad", victim)))["code"] == 70009
            locked = await c.login(victim)  # valid sig, but locked out
            assert locked["code"] == 70050
            assert (await c.login(victim, sig=""))["code"] == 70050
            assert (await c.login(other))["code"] == 0
            await c.close()

    run(body())
