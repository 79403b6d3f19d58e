"""An embedded server never outlives the harness process that started it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STARTER = r"""
import sys, time
from harness.config import load_config
from harness.targets.embedded import EmbeddedTarget
cfg = load_config(None, env={})
t = EmbeddedTarget(cfg.target, "k", sys.argv[1], ledger=False).start()
print(t.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_server_exits_when_its_harness_is_killed(tmp_path):
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    server_pid = None
    try:
        server_pid = int(starter.stdout.readline())
        assert _alive(server_pid)
        starter.send_signal(signal.SIGKILL)       # no atexit, no cleanup in the harness
        starter.wait()
        deadline = time.monotonic() + 15
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server_pid), "the embedded server outlived its harness"
        assert "harness that started this server is gone" in (tmp_path / "server.log").read_text()
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        if server_pid and _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)
