"""The XMPP targets' watchdog on stand-in processes (no server): what it ends, what it leaves."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from harness.targets.watchdog import Watch, main, reap
from harness.targets.xmpp_base import MARKER_ENV


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def server():
    """A stand-in server: its own session, the target's marker in its environment."""
    marker = f"test-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True,
                            env={"PATH": "/usr/bin:/bin", MARKER_ENV: marker})
    yield proc, marker
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_the_harness_dying_ends_the_server_and_nothing_else(server):
    proc, marker = server
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)  # no marker: not the server's
    try:
        w = Watch(proc.pid, marker, grace_s=2.0)
        watchdog = w.proc
        w._w.close()  # what the kernel does to the writer when the harness dies: end of file, no "done"
        proc.wait(10)
        assert proc.returncode == -15  # SIGTERM first, as stop() does
        assert watchdog.wait(10) == 0
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_done_dismisses_the_watchdog_at_once_even_with_a_forked_copy_of_the_writer(server):
    proc, marker = server
    w = Watch(proc.pid, marker)
    watchdog = w.proc
    child = os.fork()
    if child == 0:  # holds a copy of the writer for 3 s, as a Locust --processes worker would
        time.sleep(3)
        os._exit(0)
    try:
        t0 = time.monotonic()
        w.done()
        assert time.monotonic() - t0 < 2.0
        assert watchdog.returncode == 0
        assert proc.poll() is None  # the server was not touched
    finally:
        os.waitpid(child, 0)


def test_a_server_ignoring_sigterm_is_killed_after_the_grace(server):
    proc, marker = server
    os.kill(proc.pid, 19)  # SIGSTOP: SIGTERM stays pending
    deadline = time.monotonic() + 5  # stopped for sure first: a pending SIGTERM is delivered before SIGSTOP
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                break
        time.sleep(0.01)
    t0 = time.monotonic()
    assert reap(proc.pid, marker, grace_s=0.5) == [proc.pid]
    assert _gone_within(proc.pid, 5)
    assert proc.wait(5) == -9
    assert time.monotonic() - t0 >= 0.5


@pytest.mark.parametrize("sid,marker", [(0, "m"), (1, "m"), (12345, "")])
def test_it_refuses_what_cannot_be_a_server_of_ours(sid, marker):
    with pytest.raises(ValueError, match="refusing"):
        reap(sid, marker)
    assert main([str(sid), marker]) == 2
