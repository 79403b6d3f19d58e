"""Brute-forced UserSigs: never accepted, the 70050 lockout engages for the victim only."""
from __future__ import annotations

import asyncio
import json
import random

from bench.hostile import RawWS, bruteforce, login_once
from harness.usersig import gen_usersig
from tests.integration.conftest import SDKAPPID


def test_brute_force_is_never_accepted_and_locks_out_only_the_victim(launch_server):
    srv = launch_server("--lockout-failures", "10", "--lockout-window-s", "60", "--lockout-s", "60")
    res = asyncio.run(bruteforce(srv.host, srv.port, srv.secret, victim="victim1", attempts=300, connections=8,
                                 others=60, seed=5))
    assert res.attempts >= 290 and res.forged_accepted == 0
    failures = sum(n for code, n in res.codes.items() if code != 70050)
    assert failures == 10 and set(res.codes) - {70050} <= {70003, 70009}   # 10 failures, then locked out
    assert res.codes[70050] == res.attempts - 10
    assert res.valid_after_lockout == 70050               # even the right sig, while locked out
    _lat, codes = res.others
    assert codes == {0: 60}                               # other users never noticed


def test_spraying_guesses_over_many_accounts_locks_out_nobody(launch_server):
    """Below the per-user threshold, failures spread over many userIDs lock nobody out."""
    srv = launch_server("--lockout-failures", "3", "--lockout-window-s", "60", "--lockout-s", "60")
    users = [f"spray{i}" for i in range(300)]
    rng = random.Random(3)

    async def body():
        ws = await RawWS.open(srv.host, srv.port)
        codes = []
        for seq, user in enumerate(users * 2, 1):            # 2 wrong sigs each (limit 3)
            sig = gen_usersig(SDKAPPID, f"guess{rng.random()}", user, 3600)
            await ws.send_text(json.dumps({"cmd": "login", "seq": seq, "sdkAppID": SDKAPPID, "userID": user,
                                           "userSig": sig, "platform": "Web", "instanceID": "spray"}))
            codes.append(json.loads((await ws.recv(5))[1])["code"])
        ws.close()
        after = [(await login_once(srv.host, srv.port, u, gen_usersig(SDKAPPID, srv.secret, u, 3600)))[0]
                 for u in users[::15]]
        return codes, after

    codes, after = asyncio.run(body())
    assert set(codes) == {70009}
    assert after == [0] * len(users[::15])
