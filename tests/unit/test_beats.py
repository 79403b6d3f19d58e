"""The process-wide heartbeat schedule of the simulated SDK (harness.sdk.client._Beats)."""
from __future__ import annotations

import gc
import weakref

import gevent

from harness.sdk.client import _Beats


class _Client:
    def __init__(self, name: str, fired: list) -> None:
        self.name, self.fired = name, fired

    def _heartbeat_due(self, beats: _Beats) -> None:
        self.fired.append(self.name)


def test_beats_fire_in_due_order_and_cancel_forgets_the_client() -> None:
    fired: list[str] = []
    beats = _Beats(gevent.get_hub().loop)
    late, soon, gone = _Client("late", fired), _Client("soon", fired), _Client("gone", fired)
    beats.add(late, 0.06)
    beats.add(soon, 0.0)
    key = beats.add(gone, 0.03)
    beats.cancel(gone, key)
    ref = weakref.ref(gone)
    del gone
    gc.collect()
    assert ref() is None  # a cancelled beat keeps nothing alive
    gevent.sleep(0.2)
    assert fired == ["soon", "late"]
    assert beats.slots == {} and beats.keys == [] and beats.timer is None  # nothing left armed


def test_a_failing_client_does_not_stop_the_others_beats() -> None:
    fired: list[str] = []

    class Bad(_Client):
        def _heartbeat_due(self, beats: _Beats) -> None:
            raise RuntimeError("boom")

    beats = _Beats(gevent.get_hub().loop)
    beats.add(Bad("bad", fired), 0.0)
    beats.add(_Client("ok", fired), 0.0)
    gevent.sleep(0.1)
    assert fired == ["ok"]
