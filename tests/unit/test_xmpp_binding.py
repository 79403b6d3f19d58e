"""Binding a run to an XMPP target: credentials chosen, refusals in one line, pools sized,
the admin view in query_online_status shape. Pure: no server is started."""
from __future__ import annotations

import pytest

from harness.config import config_from_mapping
from harness.errors import ConfigError
from harness.runner.xmpp_binding import (XmppAdminView, choose_auth, pool_accounts, pool_sizes,
                                         unsupported_scenarios)
from harness.sources import JwtSource, PasswordSource

ALL = ["mass_login", "relogin_expiry", "account_switch", "kick_race"]


def cfg(**target):
    return config_from_mapping({"target": target}, env={})


def test_ejabberd_uses_jwt_when_relogin_expiry_runs_else_passwords():
    assert choose_auth(cfg(kind="ejabberd"), ALL) == "jwt"
    assert choose_auth(cfg(kind="ejabberd"), ["mass_login", "kick_race"]) == "password"
    assert choose_auth(cfg(kind="ejabberd", xmpp={"auth": "password"}), ["kick_race"]) == "password"


def test_no_expiring_tickets_is_refused_by_name_and_left_out_of_the_mix():
    with pytest.raises(ConfigError) as exc:
        choose_auth(cfg(kind="prosody"), ["relogin_expiry"])
    assert str(exc.value).startswith("scenarios.relogin_expiry:") and "expiring tickets" in str(exc.value)
    with pytest.raises(ConfigError):
        unsupported_scenarios(cfg(kind="prosody"), ["relogin_expiry"])
    left = unsupported_scenarios(cfg(kind="prosody"), [])
    assert list(left) == ["relogin_expiry"] and "Prosody 0.12" in left["relogin_expiry"]
    assert unsupported_scenarios(cfg(kind="prosody"), ["kick_race"]) == {}
    assert unsupported_scenarios(cfg(kind="ejabberd"), []) == {}
    with pytest.raises(ConfigError):
        choose_auth(cfg(kind="prosody", xmpp={"auth": "jwt"}), ["kick_race"])


def test_pools_are_sized_by_users_and_capped():
    c = cfg(kind="prosody", xmpp={"accounts_max": 500})
    sizes = pool_sizes(c, ["mass_login", "account_switch", "kick_race"], users=20)
    assert sizes == {"mass_login": 20, "account_switch": 20 * c.scenarios.account_switch.chain, "kick_race": 20}
    assert pool_sizes(c, ["mass_login"], users=None) == {"mass_login": 500}   # web UI: the cap
    names = pool_accounts(c, {"kick_race": 3}, processes=2)
    assert names == ["race0_0", "race0_1", "race0_2", "race1_0", "race1_1", "race1_2"]


def test_credentials():
    p = PasswordSource("s3cret")
    assert p.get("alice") == p.get("alice", 5) != p.get("bob") and len(p.get("alice")) == 24
    assert "s3cret" not in repr(p)
    assert PasswordSource("x", password="fixed").get("anyone") == "fixed"
    from harness.drivers.xmpp.jwt import decode_token, token_exp

    j = JwtSource(b"k" * 32, "chat.test", clock=lambda: 1_000_000)
    tok = j.get("alice", 60)
    assert token_exp(tok) == 1_000_060
    assert decode_token(tok, b"k" * 32, now=1_000_001)["jid"] == "alice@chat.test"
    assert token_exp(j.stale("alice", 60, ago_s=30)) == 1_000_000 - 30


class FakeServer:
    kind = "fake"

    def __init__(self, views):
        self.views = views

    def online_resources(self, user):
        v = self.views[user]
        if isinstance(v, Exception):
            raise v
        return v


def test_admin_view_has_query_online_status_shape():
    view = XmppAdminView(FakeServer({"a": ["r1", "r2"], "b": []}))
    code, body = view.query_online(["a", "b"])
    assert code == 0
    a, b = body["QueryResult"]
    assert (a["To_Account"], a["Status"], [d["Resource"] for d in a["Detail"]]) == ("a", "Online", ["r1", "r2"])
    assert (b["Status"], b["Detail"]) == ("Offline", [])
    code, body = XmppAdminView(FakeServer({"a": OSError("socket gone")})).query_online(["a"])
    assert code == -1 and "socket gone" in body["ErrorInfo"]
    code, body = XmppAdminView(FakeServer({"a": None})).query_online(["a"])
    assert code == -1 and "no admin view" in body["ErrorInfo"]
