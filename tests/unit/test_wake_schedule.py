"""The wake-up schedule of the simulated SDK (heartbeats, holds): harness.sdk.client.WakeSchedule."""
from __future__ import annotations

import gc
import weakref

import gevent

from harness.sdk.client import WakeSchedule


class _Client:
    def __init__(self, name: str, fired: list) -> None:
        self.name, self.fired = name, fired

    def _due(self, schedule: WakeSchedule) -> None:
        self.fired.append(self.name)


def test_wake_ups_come_in_due_order_and_cancel_forgets_the_client() -> None:
    fired: list[str] = []
    schedule = WakeSchedule(gevent.get_hub().loop)
    late, soon, gone = _Client("late", fired), _Client("soon", fired), _Client("gone", fired)
    schedule.add(late, 0.06)
    schedule.add(soon, 0.0)
    key = schedule.add(gone, 0.03)
    schedule.cancel(gone, key)
    ref = weakref.ref(gone)
    del gone
    gc.collect()
    assert ref() is None  # a cancelled beat keeps nothing alive
    gevent.sleep(0.2)
    assert fired == ["soon", "late"]
    assert schedule.slots == {} and schedule.keys == [] and schedule.timer is None  # nothing left armed


def test_a_failing_client_does_not_stop_the_others_wake_ups() -> None:
    fired: list[str] = []

    class Bad(_Client):
        def _due(self, schedule: WakeSchedule) -> None:
            raise RuntimeError("boom")

    schedule = WakeSchedule(gevent.get_hub().loop)
    schedule.add(Bad("bad", fired), 0.0)
    schedule.add(_Client("ok", fired), 0.0)
    gevent.sleep(0.1)
    assert fired == ["ok"]


def _bare_device():
    from harness.runner.users import Device

    return Device.__new__(Device)  # wait_disconnected() needs none of __init__'s fields


def test_wait_disconnected_times_out_or_wakes_on_the_disconnect() -> None:
    d = _bare_device()
    assert d.wait_disconnected(0.02) is False and d._hold is None
    g = gevent.spawn(d.wait_disconnected, 30)
    gevent.sleep(0.01)
    assert d._hold is g  # parked
    gevent.spawn(d._set_disconnected).join()  # from another greenlet, as a recovery giving up does
    assert g.get(timeout=2) is True
    assert d.disconnected.is_set()  # made after the fact: already set
    assert d.wait_disconnected(30) is True  # down for good: no wait


def test_a_killed_wait_disconnected_leaves_nothing_scheduled() -> None:
    from harness.sdk.client import wake_schedule

    d = _bare_device()
    g = gevent.spawn(d.wait_disconnected, 30)
    gevent.sleep(0.01)
    assert any(d in slot for slot in wake_schedule().slots.values())
    g.kill()
    assert g.dead and d._hold is None
    assert not any(d in slot for slot in wake_schedule().slots.values())
    d._set_disconnected()  # nobody parked: nothing to wake
    gevent.sleep(0.01)
    assert d.disconnected.is_set()
