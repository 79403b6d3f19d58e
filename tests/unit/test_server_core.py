"""The server's sans-IO Hub with a fake clock: no sockets, plain values in and out."""
from __future__ import annotations

import json

import pytest

from harness.protocol import Login
from harness.targets.server.core import Hub
from harness.targets.server.ledger import Ledger
from harness.targets.server.settings import ServerSettings
from harness.usersig import gen_usersig

SECRET = "unit-secret"
APP = 1400000000
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**kw):
    clock = Clock()
    ledger = kw.pop("ledger", None)
    hub = Hub(ServerSettings(secret_key=SECRET, **kw), clock=clock, ledger=ledger, session_prefix="s")
    return hub, clock


def login(hub, clock, conn, user, platform="Android", instance="i1", expire=3600, issued=None, seq=1):
    sig = gen_usersig(APP, SECRET, user, expire, now=int(clock.t if issued is None else issued))
    return hub.login(conn, Login(seq, APP, user, sig, platform, instance))


def frames(out):
    return [(conn.cid, json.loads(f)) for conn, f in out]


def test_login_response_then_kick_event_to_the_evicted_connection():
    hub, clock = make()
    a, b = hub.connect(), hub.connect()
    login(hub, clock, a, "u", instance="x")
    out = frames(login(hub, clock, b, "u", platform="iOS", instance="y", seq=9))
    assert [cid for cid, _ in out] == [b.cid, a.cid]  # the login's own answer first
    resp, event = out[0][1], out[1][1]
    assert resp["seq"] == 9 and resp["code"] == 0
    assert resp["data"]["kicked"] == [{"sessionID": "s1", "platform": "Android", "instanceID": "x"}]
    assert event == {"event": "kickedOffline", "sessionID": "s1", "reason": "multi_device",
                     "by": {"sessionID": "s2", "platform": "iOS", "instanceID": "y"}}
    assert a.session is None and b.session.session_id == "s2"


def test_sweep_only_ends_expired_sessions_once():
    hub, clock = make(leeway_s=2)
    short, long_, gone = hub.connect(), hub.connect(), hub.connect()
    login(hub, clock, short, "a", expire=10)
    login(hub, clock, long_, "b", expire=1000)
    login(hub, clock, gone, "c", expire=10)
    hub.disconnect(gone)
    clock.t = T0 + 12  # == time + expire + leeway: not yet ("now >" is strict)
    assert hub.sweep() == []
    clock.t = T0 + 12.01
    assert frames(hub.sweep()) == [(short.cid, {"event": "userSigExpired", "sessionID": "s1"})]
    assert hub.sweep() == []
    assert short.session is None and long_.session is not None
    assert hub.live_sessions == 1


def test_expiry_heap_stays_bounded_under_churn():
    hub, clock = make()
    conn = hub.connect()
    for i in range(5000):
        login(hub, clock, conn, f"user{i % 7}", expire=86400)
        hub.logout(conn, 1)
    assert hub.live_sessions == 0
    assert len(hub._heap) <= 2100  # dead entries are compacted, not kept for a day


def test_lockout_counts_sig_failures_in_window_and_expires():
    hub, clock = make(lockout_failures=3, lockout_window_s=10, lockout_s=30)
    c = hub.connect()

    def bad():
        return hub.login(c, Login(1, APP, "v", gen_usersig(APP, "wrong", "v", now=int(clock.t)), "Web", "w"))

    bad(); clock.t += 11; bad(); bad()  # first failure fell out of the window
    assert frames(login(hub, clock, c, "v"))[0][1]["code"] == 0
    hub.logout(c, 1)
    bad()
    assert frames(login(hub, clock, c, "v"))[0][1]["code"] == 70050
    assert frames(login(hub, clock, c, "other"))[0][1]["code"] == 0
    clock.t += 31
    assert frames(login(hub, clock, c, "v"))[0][1]["code"] == 0


def test_revocation_second_from_rest_kick():
    hub, clock = make()
    c = hub.connect()
    login(hub, clock, c, "k")
    out = frames(hub.kick_user("k"))
    assert out == [(c.cid, {"event": "kickedOffline", "sessionID": "s1", "reason": "rest_kick", "by": None})]
    assert frames(login(hub, clock, c, "k"))[0][1]["code"] == 70052  # issued in the kick second
    clock.t += 1
    assert frames(login(hub, clock, c, "k"))[0][1]["code"] == 0


def test_ledger_rows_end_before_login(tmp_path):
    path = tmp_path / "l.jsonl"
    ledger = Ledger(str(path))
    hub, clock = make(ledger=ledger, policy="dual_platform")
    a, b = hub.connect(), hub.connect()
    login(hub, clock, a, "u", platform="Web", instance="w")
    login(hub, clock, b, "u", platform="Mac", instance="m")
    login(hub, clock, b, "u", platform="Web", instance="w2")  # relogin on b + evicts a's Web session
    ledger.close()
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["event"], r["sessionID"], r["reason"], r["by"]) for r in rows] == [
        ("login", "s1", None, None),
        ("login", "s2", None, None),
        ("end", "s2", "relogin", None),
        ("end", "s1", "multi_device", "s3"),
        ("login", "s3", None, None),
    ]


@pytest.mark.parametrize("seed", [1, 2])
def test_fault_rate_is_seeded_and_partial(seed):
    def pattern():
        hub, clock = make(faults=("drop_kick:0.5",), fault_seed=seed)
        conns = [hub.connect() for _ in range(40)]
        got = []
        for i, c in enumerate(conns):
            out = login(hub, clock, c, "u", instance=f"d{i}")
            got.append(len(out) - 1)  # events beyond the response
        return got[1:]

    first = pattern()
    assert first == pattern()  # same seed, same faults
    assert 0 < sum(first) < len(first)  # some kicks dropped, some delivered


def test_bad_frames_counted_in_a_row():
    hub, _ = make(max_bad_frames=3)
    c = hub.connect()
    assert hub.handle_text(c, "x")[1] is False
    assert hub.handle_text(c, "x")[1] is False
    hub.handle_text(c, '{"cmd":"status","seq":1}')
    assert hub.handle_text(c, "x")[1] is False
    assert hub.handle_text(c, "x")[1] is False
    out, close = hub.handle_text(c, '{"seq": 5}')
    assert close is True and json.loads(out[0][1])["code"] == 6017
