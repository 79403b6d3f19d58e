"""Config text of the ejabberd and Prosody targets: policy mapping, loopback-only listeners,
load-test settings, refused policies. Nothing is started (explicit ports, no files written)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError
from harness.targets.ejabberd import EjabberdTarget, ejabberd_max_user_sessions
from harness.targets.jwt_helper import jwk_for_key, login_token, make_hs256
from harness.targets.prosody import ProsodyTarget
from harness.targets.xmpp_base import lua_str
from harness.targets.xmpp_servers import XMPP_TARGETS, make_target

PORTS = {"c2s_port": 15222, "http_port": 15280}


def ej(tmp_path, **kw) -> EjabberdTarget:
    t = EjabberdTarget(tmp_path, **PORTS, **kw)
    t.dist_port = 15299
    return t


def ej_conf(tmp_path, **kw) -> dict:
    return yaml.safe_load(ej(tmp_path, **kw).config_text())


# ---------------------------------------------------------------------- ejabberd
@pytest.mark.parametrize("policy,max_sessions,expected", [
    ("single_platform", None, 1), ("max_sessions", 3, 3), ("unlimited", None, "infinity"), (None, None, 10)])
def test_ejabberd_policy_maps_to_max_user_sessions(tmp_path, policy, max_sessions, expected):
    conf = ej_conf(tmp_path, policy=policy, max_sessions=max_sessions)
    assert conf["shaper_rules"]["max_user_sessions"] == expected


def test_ejabberd_default_policy_is_the_stock_config(tmp_path):
    t = ej(tmp_path)
    assert (t.policy, t.max_sessions) == ("max_sessions", 10)
    assert ejabberd_max_user_sessions("max_sessions", 10) == "10"


def test_ejabberd_listeners_are_loopback_only_with_load_test_settings(tmp_path):
    conf = ej_conf(tmp_path, policy="unlimited")
    listeners = conf["listen"]
    assert {(l["port"], l["module"]) for l in listeners} == {(15222, "ejabberd_c2s"), (15280, "ejabberd_http")}
    for l in listeners:
        assert l["ip"] == "127.0.0.1"
        assert l["backlog"] == 4096
    c2s = next(l for l in listeners if l["module"] == "ejabberd_c2s")
    assert c2s["shaper"] == "none" and c2s["starttls_required"] is False and c2s["starttls"] is False
    http = next(l for l in listeners if l["module"] == "ejabberd_http")
    assert http["request_handlers"] == {"/api": "mod_http_api", "/ws": "ejabberd_http_ws"}
    assert conf["shaper_rules"]["c2s_shaper"] == "none"
    assert conf["registration_timeout"] == "infinity"
    assert "mod_fail2ban" not in conf["modules"]
    for mod in ("mod_http_api", "mod_ping", "mod_register", "mod_admin_extra"):
        assert mod in conf["modules"]
    assert conf["hosts"] == ["localhost"]
    assert conf["auth_method"] == "internal" and conf["auth_password_format"] == "plain"


def test_ejabberd_admin_api_is_loopback_only(tmp_path):
    perms = ej_conf(tmp_path)["api_permissions"]
    assert set(perms) == {"loopback admin", "console commands"}
    assert perms["console commands"]["from"] == ["ejabberd_ctl"]
    rule = perms["loopback admin"]
    assert rule["from"] == ["mod_http_api"]
    assert rule["who"] == {"ip": "127.0.0.0/8"}
    for command in ("register", "user_resources", "kick_session", "kick_user", "connected_users_number"):
        assert command in rule["what"]
    assert "*" not in rule["what"] and "stop" not in rule["what"]


def test_ejabberd_transports_and_tls(tmp_path):
    conf = ej_conf(tmp_path, transports=("tcp", "bosh"), tls=True)
    http = next(l for l in conf["listen"] if l["module"] == "ejabberd_http")
    assert http["request_handlers"] == {"/api": "mod_http_api", "/bosh": "mod_bosh"}
    assert "mod_bosh" in conf["modules"]
    c2s = next(l for l in conf["listen"] if l["module"] == "ejabberd_c2s")
    assert c2s["starttls_required"] is True
    assert conf["certfiles"] == [str(tmp_path / "ejabberd" / "cert.pem")]
    assert ej(tmp_path, transports=("tcp",)).ws_url is None


def test_ejabberd_jwt_config(tmp_path):
    conf = ej_conf(tmp_path, auth="jwt", jwt_key=b"k" * 32, jwt_field="sub")
    assert conf["auth_method"] == "jwt"
    assert conf["jwt_jid_field"] == "sub"
    assert conf["jwt_key"].endswith("/jwt_key.jwk")
    assert "auth_password_format" not in conf
    with pytest.raises(ConfigError, match="jwt_key"):
        EjabberdTarget(tmp_path, auth="jwt")


def test_ejabberd_ctl_config_keeps_erlang_distribution_on_loopback_without_epmd(tmp_path):
    text = ej(tmp_path).ctl_config_text()
    assert "ERLANG_NODE=ejabberd-15222@localhost" in text
    assert "ERL_DIST_PORT=15299" in text           # -> -erl_epmd_port 15299 -start_epmd false
    assert "inet_dist_use_interface {127,0,0,1}" in text
    env = ej(tmp_path)._env()
    assert env["ERL_EPMD_ADDRESS"] == "127.0.0.1" and env["INET_DIST_INTERFACE"] == "127.0.0.1"
    assert '{host,{127,0,0,1}, ["localhost"]}' in EjabberdTarget.inetrc_text()


def test_ejabberd_command_is_foreground_with_own_folders(tmp_path):
    cmd = ej(tmp_path)._command()
    w = str(tmp_path / "ejabberd")
    assert cmd[0] == "/usr/sbin/ejabberdctl" and cmd[-1] == "foreground"
    assert cmd[cmd.index("--ctl-config") + 1] == w + "/ejabberdctl.cfg"
    assert cmd[cmd.index("--spool") + 1] == w + "/spool"


# ---------------------------------------------------------------------- prosody
def pr_conf(tmp_path, **kw) -> str:
    return ProsodyTarget(tmp_path, **PORTS, **kw).config_text()


def lua_set(text: str, key: str) -> str:
    m = re.search(rf"^{key} = (.*)$", text, re.MULTILINE)
    assert m, f"{key} missing"
    return m.group(1)


def test_prosody_default_policy_is_unlimited(tmp_path):
    t = ProsodyTarget(tmp_path)
    assert (t.policy, t.max_sessions) == ("unlimited", None)
    assert ProsodyTarget.supported_policies == ("unlimited",)


@pytest.mark.parametrize("policy,max_sessions", [("single_platform", None), ("max_sessions", 2)])
def test_prosody_refuses_policies_it_cannot_enforce(tmp_path, policy, max_sessions):
    with pytest.raises(ConfigError) as err:
        ProsodyTarget(tmp_path, policy=policy, max_sessions=max_sessions)
    assert str(err.value) == (f"target.policy: prosody cannot enforce {policy}: its core has no per-account "
                              f"session limit; use policy unlimited")
    with pytest.raises(ConfigError):
        ProsodyTarget.check_policy(policy)
    ProsodyTarget.check_policy("unlimited")


def test_prosody_refuses_jwt(tmp_path):
    with pytest.raises(ConfigError, match="prosody cannot use auth jwt"):
        ProsodyTarget(tmp_path, auth="jwt", jwt_key=b"k")


def test_prosody_listeners_are_loopback_only_with_load_test_settings(tmp_path):
    text = pr_conf(tmp_path)
    for key in ("interfaces", "local_interfaces", "c2s_interfaces", "http_interfaces"):
        assert lua_set(text, key) == '{ "127.0.0.1" }'
    assert lua_set(text, "c2s_ports") == "{ 15222 }"
    assert lua_set(text, "http_ports") == "{ 15280 }"
    for key in ("s2s_ports", "https_ports", "c2s_direct_tls_ports", "s2s_direct_tls_ports", "component_ports"):
        assert lua_set(text, key) == "{ }"
    assert lua_set(text, "network_settings") == "{ tcp_backlog = 4096 }"
    assert lua_set(text, "c2s_require_encryption") == "false"
    assert lua_set(text, "allow_unencrypted_plain_auth") == "true"
    assert lua_set(text, "min_seconds_between_registrations") == "0"
    assert lua_set(text, "limits") == "{ }"
    assert lua_set(text, "modules_disabled") == '{ "s2s" }'
    modules = lua_set(text, "modules_enabled")
    for mod in ("websocket", "ping", "admin_shell", "register", "saslauth"):
        assert f'"{mod}"' in modules
    assert '"limits"' not in modules and '"tls"' not in modules
    assert lua_set(text, "authentication") == '"internal_plain"'
    assert 'VirtualHost "localhost"' in text
    assert "0.0.0.0" not in text and "::" not in text


def test_prosody_scram_tls_and_transports(tmp_path):
    text = pr_conf(tmp_path, password_format="scram", tls=True, transports=("tcp",), domain="chat.test")
    assert lua_set(text, "authentication") == '"internal_hashed"'
    assert lua_set(text, "c2s_require_encryption") == "true"
    assert '"tls"' in lua_set(text, "modules_enabled") and '"websocket"' not in lua_set(text, "modules_enabled")
    assert 'VirtualHost "chat.test"' in text
    assert ProsodyTarget(tmp_path, transports=("tcp",)).ws_url is None
    assert ProsodyTarget(tmp_path, **PORTS).ws_url == "ws://127.0.0.1:15280/xmpp-websocket"


def test_prosody_admin_socket_path_fits_af_unix(tmp_path):
    long_dir = tmp_path / ("x" * 120)
    sock = ProsodyTarget(long_dir).admin_socket
    assert len(str(sock)) < 108 and not sock.exists()
    assert ProsodyTarget("/run/x").admin_socket == Path("/run/x/prosody/prosody.sock")
    assert f"admin_socket = \"{sock}\"" in ProsodyTarget(long_dir, **PORTS).config_text()


# ---------------------------------------------------------------------- shared validation
@pytest.mark.parametrize("cls", [EjabberdTarget, ProsodyTarget])
def test_bad_options_are_one_sentence_config_errors(cls, tmp_path):
    cases = [{"host": "0.0.0.0"}, {"host": "10.0.0.1"}, {"policy": "dual_platform"}, {"auth": "ldap"},
             {"log_level": "loud"}, {"transports": ("tcp", "quic")}, {"backlog": 0},
             {"password_format": "md5"}, {"policy": "unlimited", "max_sessions": 3}]
    for kw in cases:
        with pytest.raises(ConfigError) as err:
            cls(tmp_path, **kw)
        assert "\n" not in str(err.value) and str(err.value).startswith("target.")


def test_ejabberd_max_sessions_needs_a_positive_count(tmp_path):
    for bad in (None, 0, -1, True, "3"):
        with pytest.raises(ConfigError, match="target.max_sessions"):
            EjabberdTarget(tmp_path, policy="max_sessions", max_sessions=bad)


def test_registry_and_factory(tmp_path):
    assert set(XMPP_TARGETS) == {"ejabberd", "prosody"}
    assert isinstance(make_target("prosody", tmp_path), ProsodyTarget)
    with pytest.raises(ConfigError, match="target.kind"):
        make_target("openfire", tmp_path)


def test_describe_before_start(tmp_path):
    d = ej(tmp_path, policy="single_platform").describe()
    assert d["kind"] == "ejabberd" and d["policy"] == "single_platform" and d["max_user_sessions"] == "1"
    assert d["c2s_port"] == 15222 and d["ws_url"] == "ws://127.0.0.1:15280/ws" and d["auth"] == "password"


# ---------------------------------------------------------------------- quoting and tokens
def test_lua_str_escapes_quotes_backslashes_and_control_bytes():
    assert lua_str('a"b\\c') == '"a\\"b\\\\c"'
    assert lua_str("x\ny\0") == '"x\\010y\\000"'
    assert lua_str("héllo") == '"héllo"'


def test_hs256_token_and_jwk():
    key = b"secret-key"
    token = login_token("alice@localhost", key, ttl_s=60, now=1000)
    header, payload, sig = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)
    assert json.loads(base64.urlsafe_b64decode(pad(header))) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(base64.urlsafe_b64decode(pad(payload))) == {"jid": "alice@localhost", "exp": 1060}
    expected = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(pad(sig)) == expected
    assert "=" not in token
    assert make_hs256({"a": 1}, key).count(".") == 2
    assert jwk_for_key(key) == {"kty": "oct", "alg": "HS256", "k": "c2VjcmV0LWtleQ"}
