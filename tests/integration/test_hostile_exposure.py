"""Exposure: the server listens on loopback unless told otherwise and says so when it is not;
the secret key reaches the embedded server through its environment only (never argv, never
its config file or log)."""
from __future__ import annotations

import os
import subprocess
import sys

import psutil

from harness.config import TargetConfig
from harness.targets.embedded import EmbeddedTarget
from tests.integration.conftest import ROOT


def test_default_bind_is_loopback_only(launch_server):
    srv = launch_server()
    assert srv.host == "127.0.0.1"
    listening = [c for c in psutil.Process(srv.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
    assert "warning" not in srv.stderr()


def test_a_non_loopback_bind_is_announced_on_stderr():
    # 192.0.2.1 (TEST-NET-1) is never assigned to this host: the warning is printed, then the
    # bind fails, so nothing is ever exposed by this test
    env = dict(os.environ, CHAT_SECRET_KEY="exposure-test-key", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "harness.targets.server", "--host", "192.0.2.1", "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    lines = proc.stderr.strip().splitlines()
    assert any("warning" in ln and "192.0.2.1" in ln and "reachable from other hosts" in ln for ln in lines)
    assert proc.returncode == 1 and "cannot listen on 192.0.2.1" in proc.stderr and "Traceback" not in proc.stderr


def test_embedded_target_gets_the_key_by_environment_only(tmp_path):
    key = "embedded-" + os.urandom(12).hex()
    target = EmbeddedTarget(TargetConfig(), key, tmp_path).start()
    try:
        cmdline = " ".join(psutil.Process(target.pid).cmdline())
        assert key not in cmdline                                   # `ps` never shows it
        assert target.base_url.startswith("http://127.0.0.1:")
    finally:
        target.stop()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path     # server-config.yaml, server.log, ledger
