"""The driver conformance suite (harness/drivers/conformance.py) for the xmpp driver against the
real servers the harness can start (ejabberd and Prosody from Debian; CI installs both: a missing
server fails here, it does not skip), plus the findings the harness made on them, pinned.

Findings are real-server behaviour that violates the Tencent Chat semantics the harness checks
(docs/targets.md): each test proves it through the server's own admin view, not only our client.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import gevent
import pytest

from harness.drivers.conformance import CASES, ConformanceTarget, RecordingSink, run_case
from harness.drivers.xmpp.driver import XmppDriver
from harness.drivers.xmpp.jwt import make_token
from harness.targets.ejabberd import EjabberdTarget
from harness.targets.prosody import ProsodyTarget

START_S = 90.0
N_USERS = 16
_n = itertools.count()


def pw(user: str) -> str:
    return f"conf-{user}-pw"


@pytest.fixture(scope="module")
def ejabberd(tmp_path_factory) -> Iterator[EjabberdTarget]:
    t = EjabberdTarget(tmp_path_factory.mktemp("ej-conf"), policy="single_platform")
    t.start(timeout=START_S)
    try:
        t.create_accounts([f"cf{i}" for i in range(N_USERS)], pw)
        yield t
    finally:
        t.stop()


@pytest.fixture(scope="module")
def prosody(tmp_path_factory) -> Iterator[ProsodyTarget]:
    t = ProsodyTarget(tmp_path_factory.mktemp("pr-conf"))   # stock policy: unlimited
    t.start(timeout=START_S)
    try:
        t.create_accounts([f"cf{i}" for i in range(N_USERS)], pw)
        yield t
    finally:
        t.stop()


def _target(server, kick_mode: str, transport: str = "tcp") -> ConformanceTarget:
    port = server.http_port if transport == "ws" else server.c2s_port

    def make(sink: RecordingSink) -> XmppDriver:
        d = XmppDriver(host=server.host, port=port, domain=server.domain, sink=sink, transport=transport,
                       ws_path=server.ws_path)
        # the wire cannot tell a same-resource <conflict/> from an overflow one: the caller says
        # whether its devices share the resource (harness.runner.users.Device does the same)
        d.resource_shared = kick_mode == "same_instance"
        return d

    return ConformanceTarget(
        name=f"xmpp/{server.kind}/{transport}",
        make=make,
        user=lambda i: (f"cf{i}", pw(f"cf{i}")),
        bad_credential=lambda u: "wrong-password",
        kick_mode=kick_mode)


@pytest.mark.parametrize("case", sorted(CASES))
def test_xmpp_driver_conforms_on_ejabberd(case: str, ejabberd: EjabberdTarget) -> None:
    run_case(case, _target(ejabberd, "other_instance"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_xmpp_driver_conforms_on_prosody(case: str, prosody: ProsodyTarget) -> None:
    run_case(case, _target(prosody, "same_instance"))


@pytest.mark.parametrize("case", ["login_ok_in_wire_order", "kick_reported_once", "heartbeat_and_logout"])
def test_xmpp_driver_conforms_over_websocket(case: str, ejabberd: EjabberdTarget, prosody: ProsodyTarget) -> None:
    run_case(case, _target(ejabberd, "other_instance", "ws"))
    run_case(case, _target(prosody, "same_instance", "ws"))


def test_finding_ejabberd_keeps_a_session_online_after_its_jwt_expired(tmp_path) -> None:
    """ejabberd 23.01 (auth_method: jwt) checks ``exp`` at login only: a session whose token
    expired stays online, answers pings and is listed by the server's own admin view; nothing
    tells the client (no stream error). A new login with the same token is refused. Under the
    Tencent semantics the harness checks (userSigExpired once the ticket expires) every such
    session is an ``expiry_on_time`` violation: the harness reports it (e2e: test_xmpp_runs.py)."""
    key = b"finding-jwt-key-0123456789abcdef"
    t = EjabberdTarget(tmp_path, policy="single_platform", auth="jwt", jwt_key=key)
    t.start(timeout=START_S)
    try:
        sink = RecordingSink()
        d = XmppDriver(host=t.host, port=t.c2s_port, domain=t.domain, sink=sink)
        assert d.connect(time.monotonic() + 10) is None
        token = make_token(key, f"finder@{t.domain}", time.time() + 2)
        r = d.login("finder", token, "Android", "res1", 10)
        assert r.outcome == "ok", r
        gevent.sleep(5)                                    # the token expired 3 s ago
        assert t.online_resources("finder") == ["res1"]   # the server's own view: still online
        assert d.heartbeat(5).outcome == "ok"              # and it still answers
        assert not sink.named("kicked") and not sink.named("lost") and not sink.named("credential_expired")
        d2 = XmppDriver(host=t.host, port=t.c2s_port, domain=t.domain, sink=RecordingSink())
        assert d2.connect(time.monotonic() + 10) is None
        import harness.drivers.xmpp.driver as drv_mod
        real = drv_mod.token_exp
        drv_mod.token_exp = lambda _c: None                # send the expired token anyway
        try:
            refused = d2.login("finder", token, "Android", "res2", 10)
        finally:
            drv_mod.token_exp = real
        assert (refused.outcome, refused.code, refused.desc) == ("fail", 70009, "not-authorized")
        d.close()
        d2.close()
    finally:
        t.stop()


def test_finding_ejabberd_max_user_sessions_is_exceeded_by_near_simultaneous_logins(tmp_path) -> None:
    """ejabberd 23.01, ``max_user_sessions: 1`` (our ``single_platform``): three logins of one
    account on different resources within milliseconds often leave TWO sessions online, both
    answering pings and both listed by the server's own admin view (``user_resources``) seconds
    later. Cause (ejabberd_sm:check_max_sessions): each new session, once registered, counts the
    account's sessions and replaces only the oldest one (``lists:min``) when over the limit; the
    second and third login both pick the same oldest session, so the second one survives.
    The harness reports it as policy_limit ``race_survivors`` (e2e: test_xmpp_runs.py)."""
    t = EjabberdTarget(tmp_path, policy="single_platform")
    t.start(timeout=START_S)
    races, over = 20, []
    try:
        users = [f"mx{i}" for i in range(races)]
        t.create_accounts(users, pw)
        for u in users:
            sinks = [RecordingSink() for _ in range(3)]
            drivers = [XmppDriver(host=t.host, port=t.c2s_port, domain=t.domain, sink=s) for s in sinks]
            for d in drivers:
                assert d.connect(time.monotonic() + 10) is None
            gs = [gevent.spawn(d.login, u, pw(u), "Android", f"dev{i}", 15) for i, d in enumerate(drivers)]
            gevent.joinall(gs, timeout=20)
            assert all(g.value is not None and g.value.outcome == "ok" for g in gs), [g.value for g in gs]
            gevent.sleep(0.5)
            online = t.online_resources(u)
            alive = [d for d, s in zip(drivers, sinks) if not s.named("kicked") and not s.named("lost")]
            if len(online) > 1:
                # a second look, and a second client-side witness: the survivors still answer pings
                gevent.sleep(1.0)
                assert t.online_resources(u) == online
                assert all(d.heartbeat(5).outcome == "ok" for d in alive)
                over.append((u, online))
            for d in drivers:
                d.close()
    finally:
        t.stop()
    assert over, f"no race of {races} left more than one session online (the finding did not reproduce)"
