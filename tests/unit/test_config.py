"""config.yaml <-> defaults, and errors that name the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import Config, config_from_mapping, load_config, masked
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_repo_config_yaml_states_the_defaults():
    """The commented config.yaml shows exactly the dataclass defaults (no drift)."""
    assert load_config(ROOT / "config.yaml", env={}) == config_from_mapping({}, env={})
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert masked(Config()) == raw


@pytest.mark.parametrize("override, key, text", [
    ("scenarios.kick_race.devices=0", "scenarios.kick_race.devices", "expected 2..50, got 0"),
    ("scenarios.kick_race.devise=3", "scenarios.kick_race.devise", "did you mean 'devices'"),
    ("target.policy=quad_platform", "target.policy", "expected one of auto, single_platform"),
    ("target.native_instances=4", "target.native_instances", "expected 1..3, got 4"),
    ("target.max_sessions=0", "target.max_sessions", "expected 1..100, got 0"),
    ("target.max_sessions=101", "target.max_sessions", "expected 1..100, got 101"),
    ("target.policy=limitless", "target.policy", "max_sessions, unlimited"),
    ("gates.latency_ms.login.p98=10", "gates.latency_ms.login.p98", "expected one of p50"),
    ("gates.error_ratio.overall=2", "gates.error_ratio.overall", "expected 0..1"),
    ("client.platform=Symbian", "client.platform", "expected one of Android"),
    ("scenarios.kick_race.platforms=[iOS, Palm]", "scenarios.kick_race.platforms[1]", "Palm"),
    ("target.host=ftp://x", "target.host", "expected ws://HOST:PORT"),
    ("run.settle_s=abc", "run.settle_s", "expected a number"),
    ("checks.enabled=[nope]", "checks.enabled[0]", "expected one of kick_exactly_once"),
    ("report.compare={fail_on: ['latency.login.p99:+10%', 'speed:+1']}", "report.compare.fail_on[1]",
     "unknown metric 'speed'"),
    ("report.compare={fail_on: 'violations:0'}", "report.compare.fail_on", "expected a list"),
    ("report.compare={fail_en: []}", "report.compare.fail_en", "unknown key"),
])
def test_bad_values_name_the_key(override, key, text):
    with pytest.raises(ConfigError) as exc:
        load_config(ROOT / "config.yaml", overrides=[override], env={})
    assert exc.value.key == key
    assert text in str(exc.value)
    assert str(exc.value).startswith(key)


def test_new_policies_and_max_sessions_default():
    assert load_config(None, env={}).target.max_sessions == 10
    cfg = load_config(None, overrides=["target.policy=max_sessions", "target.max_sessions=3"], env={})
    assert (cfg.target.policy, cfg.target.max_sessions) == ("max_sessions", 3)
    assert load_config(None, overrides=["target.policy=unlimited"], env={}).target.policy == "unlimited"


def test_set_overrides_parse_yaml_scalars_and_lists():
    cfg = load_config(None, overrides=["scenarios.kick_race.devices=7", "target.require_import=true",
                                       "scenarios.kick_race.platforms=[Web, iOS]"], env={})
    assert cfg.scenarios.kick_race.devices == 7
    assert cfg.target.require_import is True
    assert cfg.scenarios.kick_race.platforms == ["Web", "iOS"]


def test_environment_wins_and_secret_is_masked():
    cfg = load_config(None, env={"CHAT_SECRET_KEY": "s3cr3t", "CHAT_SDKAPPID": "1400000042", "CHAT_ADMIN": "ops"})
    assert (cfg.target.secret_key, cfg.target.sdkappid, cfg.target.admin) == ("s3cr3t", 1400000042, "ops")
    dumped = yaml.safe_dump(masked(cfg))
    assert "s3cr3t" not in dumped and "***" in dumped


def test_bad_yaml_and_missing_file_are_one_sentence(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("target: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad, env={})
    assert "not valid YAML at line" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "none.yaml", env={})
    assert "file not found" in str(exc.value)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad, env={})


def test_policy_auto_is_the_kinds_stock_policy():
    """target.policy auto resolves per kind; the checks judge the resolved (declared) policy."""
    assert config_from_mapping({}, env={}).target.policy == "single_platform"
    assert config_from_mapping({"target": {"kind": "ejabberd"}}, env={}).target.policy == "max_sessions"
    assert config_from_mapping({"target": {"kind": "ejabberd"}}, env={}).target.max_sessions == 10
    assert config_from_mapping({"target": {"kind": "prosody"}}, env={}).target.policy == "unlimited"
    assert config_from_mapping({"target": {"host": "xmpp://127.0.0.1:5222"}}, env={}).target.policy == "unlimited"
    assert config_from_mapping({"target": {"host": "ws://127.0.0.1:9000"}}, env={}).target.policy == "single_platform"
    explicit = config_from_mapping({"target": {"kind": "prosody", "policy": "single_platform"}}, env={})
    assert explicit.target.policy == "single_platform"   # refused later by the prosody target, not rewritten


def test_target_kind_and_protocol_are_validated():
    c = config_from_mapping({"target": {"host": "ws://127.0.0.1:9000"}}, env={})
    assert (c.target.kind, c.target.wire) == ("external", "tim")
    c = config_from_mapping({"target": {"host": "ws://127.0.0.1:5280/ws", "protocol": "xmpp"}}, env={})
    assert (c.target.kind, c.target.wire) == ("external", "xmpp")
    assert config_from_mapping({"target": {"kind": "prosody"}}, env={}).target.wire == "xmpp"
    for raw, key in (({"kind": "ejabberd", "host": "ws://127.0.0.1:1"}, "target.host"),
                     ({"kind": "external"}, "target.host"),
                     ({"kind": "ejabberd", "protocol": "tim"}, "target.protocol"),
                     ({"host": "xmpp://127.0.0.1:5222", "protocol": "tim"}, "target.protocol"),
                     ({"kind": "openfire"}, "target.kind")):
        with pytest.raises(ConfigError) as exc:
            config_from_mapping({"target": raw}, env={})
        assert str(exc.value).startswith(key + ":"), exc.value
