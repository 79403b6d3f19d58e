"""ServerSettings: validation names the dotted key; config.yaml's target: section is accepted."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError
from harness.targets.server.__main__ import settings_from_args
from harness.targets.server.settings import ServerSettings, parse_fault
from harness.util import is_loopback

ROOT = Path(__file__).resolve().parents[2]


def test_repo_config_target_section_is_accepted_and_host_is_ignored():
    target = yaml.safe_load((ROOT / "config.yaml").read_text())["target"]
    target = {**target, "secret_key": "k", "host": "ws://192.0.2.1:80", "port": 1}
    s = ServerSettings.from_mapping(target)
    assert (s.host, s.port) == ("127.0.0.1", 8080)  # bind address never comes from the mapping
    assert s.policy == "single_platform" and s.sweep_interval_s == 0.25 and s.faults == ()
    assert s.max_sessions == 10
    assert ServerSettings.from_mapping({**target, "policy": "max_sessions", "max_sessions": 3}).max_sessions == 3
    assert ServerSettings.from_mapping({**target, "policy": "unlimited"}).policy == "unlimited"


@pytest.mark.parametrize("key,value,needle", [
    ("policy", "x", "expected one of"),
    ("native_instances", 4, "1..3"),
    ("web_instances", 0, "1..10"),
    ("max_sessions", 0, "1..100"),
    ("max_sessions", 101, "1..100"),
    ("leeway_s", True, "integer"),
    ("sweep_interval_s", 1.5, "0.01..1"),
    ("require_import", "yes", "true or false"),
    ("faults", ["kick_newest:2"], "0..1"),
    ("faults", [3], "NAME[:RATE]"),
    ("admin", "bad admin", "userID"),
    ("secret_key", "", "must not be empty"),
])
def test_from_mapping_errors_name_the_key(key, value, needle):
    with pytest.raises(ConfigError) as err:
        ServerSettings.from_mapping({"secret_key": "k", key: value}, key_prefix="target")
    assert err.value.key == f"target.{key}"
    assert needle in err.value.message


def test_faults_parse_and_defaults():
    s = ServerSettings.from_mapping({"secret_key": "k", "faults": ["drop_kick:0.2", "dup_kick"], "fault_seed": 4})
    assert s.fault_rates == {"drop_kick": 0.2, "dup_kick": 1.0}
    assert parse_fault("delay_expiry:0") == ("delay_expiry", 0.0)
    with pytest.raises(ValueError):
        parse_fault("nope")


def test_cli_flags_beat_env_and_config(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("target:\n  policy: dual_platform\n  admin: boss\n  secret_key: from_file\n")
    env = {"CHAT_SECRET_KEY": "from_env", "CHAT_ADMIN": "env_admin"}
    s = settings_from_args(["--config", str(conf), "--policy", "multi_platform", "--port", "0",
                            "--fault", "dup_kick:0.5", "--no-require-import"], env)
    assert (s.policy, s.admin, s.secret_key, s.port, s.faults) == (
        "multi_platform", "env_admin", "from_env", 0, ("dup_kick:0.5",))
    with pytest.raises(ConfigError) as err:
        settings_from_args(["--web-instances", "11"], env)
    assert err.value.key == "--web-instances"


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("127.9.9.9") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
