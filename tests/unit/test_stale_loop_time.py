"""Timeouts count from now, not from the event loop's last iteration.

libev's "now" is the start of the loop's current iteration: after a stretch of CPU-bound Python
(other greenlets, a big check, a test) it is stale by that long, and a raw loop timer started on
it fires that much early. The harness's raw timers start with ``update=True``; these tests stall
the loop for longer than the timeout and check that a wait still lasts its timeout.
"""
from __future__ import annotations

import socket
import time

import gevent
from gevent.event import Event
from gevent.monkey import get_original

from harness.drivers.tim import _wait_readable
from harness.runner.users import wait_event

STALL_S = 0.6
_blocking_sleep = get_original("time", "sleep")  # time.sleep may be gevent's (Locust patches)
TIMEOUT_S = 0.4


def _stall_the_loop() -> None:
    gevent.sleep(0.01)          # one loop iteration: its "now" is set here
    _blocking_sleep(STALL_S)    # the real sleep: the loop does not iterate meanwhile


def test_waiting_for_a_socket_lasts_its_timeout_after_the_loop_stalled():
    a, b = socket.socketpair()
    try:
        hub = gevent.get_hub()
        io = hub.loop.io(a.fileno(), 1)
        _stall_the_loop()
        t0 = time.monotonic()
        assert _wait_readable(io, hub, TIMEOUT_S) is False   # nothing came: a timeout ...
        assert time.monotonic() - t0 >= TIMEOUT_S * 0.9        # ... after the timeout, not at once
        io.close()
    finally:
        a.close()
        b.close()


def test_waiting_for_an_event_lasts_its_timeout_after_the_loop_stalled():
    _stall_the_loop()
    t0 = time.monotonic()
    assert wait_event(Event(), TIMEOUT_S) is False
    assert time.monotonic() - t0 >= TIMEOUT_S * 0.9
