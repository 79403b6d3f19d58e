"""Stops a harness-started XMPP server when the harness dies without stopping it.

A target's ``stop()`` ends its server by pid (:mod:`harness.targets.xmpp_base`), and ``atexit``
covers a normal exit; neither runs when the harness is SIGKILLed, killed by the OOM killer or
killed with its whole process group. So each started server gets this small companion process,
in a session of its own (a kill of the harness's process group does not reach it), reading a
pipe whose only writer is the harness:

* ``stop()`` stopped the server itself, then writes ``done`` and closes the pipe: the watchdog
  exits and signals nothing;
* the harness died: the kernel closes its end of the pipe, the watchdog reads end-of-file
  without ``done`` and ends the server exactly as ``stop()`` would: SIGTERM to every process
  that is the target's own (the server's session, and any process carrying the target's
  unique ``HARNESS_TARGET_ID`` marker, e.g. ``epmd -daemon``), SIGKILL to what is left after
  the grace time. Nothing else is ever signalled.

    python -m harness.targets.watchdog SID MARKER [GRACE_S]     (stdin: the pipe)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.targets.xmpp_base import _signal, owned_pids

__all__ = ["Watch", "main", "reap"]

_DONE = b"done"


def reap(sid: int, marker: str, grace_s: float = 10.0) -> list[int]:
    """End the target's processes: SIGTERM, then SIGKILL after ``grace_s``; the pids it found.

    ``sid`` must be the pid of the server we started (it leads its own session): 0 and 1 are
    refused (session 0 holds init and the kernel's threads in a container) and so is any session
    or process of our own, whatever the caller passed."""
    if sid < 2 or not marker:
        raise ValueError(f"refusing to reap session {sid} / marker {marker!r}: not a server we started")
    me = {os.getpid(), os.getppid(), 1}
    mine = os.getsid(0)

    def owned() -> list[int]:
        if sid == mine:
            return []
        return [p for p in owned_pids(sid, marker) if p not in me]

    first = owned()
    for pid in first:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while owned() and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(3):
        left = owned()
        if not left:
            break
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.2)
    return first


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3) or not args[0].isdigit() or int(args[0]) < 2 or not args[1]:
        print("usage: python -m harness.targets.watchdog SID MARKER [GRACE_S]", file=sys.stderr)
        return 2
    sid, marker = int(args[0]), args[1]
    grace = float(args[2]) if len(args) == 3 else 10.0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the harness, which stops its server
    got = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        got = (got + chunk)[-16:]
        if got.endswith(_DONE):
            return 0  # at once: a process forked from the harness (Locust --processes) may hold the writer too
    reap(sid, marker, grace)
    return 0


class Watch:
    """The harness's side: starts the watchdog for one server, tells it ``done`` on a clean stop."""

    def __init__(self, sid: int, marker: str, grace_s: float = 10.0) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("HARNESS_TARGET_ID", None)  # the watchdog is not one of the server's processes
        r, w = os.pipe()  # both ends non-inheritable (PEP 446): no other child of ours holds the writer
        try:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", "harness.targets.watchdog", str(sid), marker, f"{grace_s:g}"],
                stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, env=env,
                start_new_session=True)
        except OSError:
            self.proc = None
            os.close(w)
            w = -1
        finally:
            os.close(r)
        # the writer as a raw file: its close() is the C close at once (gevent's monkey-patched
        # os.close defers closing a pipe to the next loop iteration, and the watchdog would wait)
        self._w = open(w, "wb", buffering=0) if w >= 0 else None  # noqa: SIM115 -- closed in done()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def done(self, timeout: float = 5.0) -> None:
        """The server was stopped by its target: the watchdog leaves without signalling. Idempotent."""
        w, self._w = self._w, None
        if w is not None:
            try:
                w.write(_DONE)
            except OSError:
                pass
            w.close()
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # ours, by pid
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
