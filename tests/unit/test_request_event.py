"""The request path fires Locust's request event without EventHook.fire's keyword packing
(harness.runner.users.fire_request): listeners must see exactly what fire() gives them."""
from __future__ import annotations

import logging

import pytest
from locust.event import EventHook, Events
from locust.exception import StopUser

from harness.runner.users import fire_request


def test_listeners_get_what_fire_gives_them_in_order() -> None:
    hook = EventHook()
    by_fire: list = []
    by_us: list = []
    hook.add_listener(lambda **kw: by_fire.append(("a", kw)))
    hook.add_listener(lambda **kw: by_fire.append(("b", kw)))
    hook.fire(request_type="WS", name="login", response_time=1.5, response_length=0, exception=None,
              context={"user": "u1"})
    hook._handlers = [lambda **kw: by_us.append(("a", kw)), lambda **kw: by_us.append(("b", kw))]
    fire_request(hook, "WS", "login", 1.5, None, {"user": "u1"})
    assert by_us == by_fire and [k for k, _ in by_us] == ["a", "b"]


def test_a_failing_listener_is_logged_and_the_others_still_run(caplog) -> None:
    hook = Events().request
    seen: list = []

    def bad(**kw):
        raise ValueError("boom")

    hook.add_listener(bad)
    hook.add_listener(lambda **kw: seen.append(kw["name"]))
    with caplog.at_level(logging.ERROR):
        fire_request(hook, "WS", "status", 0.2, None, {})
    assert seen == ["status"] and "Uncaught exception in event handler" in caplog.text


def test_stop_user_from_a_listener_passes_through_and_listeners_may_change_the_list() -> None:
    hook = EventHook()
    seen: list = []

    def adds(**kw):
        seen.append("adds")
        hook.add_listener(lambda **kw: seen.append("late"))

    hook.add_listener(adds)
    fire_request(hook, "WS", "logout", 0.1, None, {})
    assert seen == ["adds"]  # the listener added while firing runs from the next request on
    hook._handlers = [lambda **kw: (_ for _ in ()).throw(StopUser())]
    with pytest.raises(StopUser):
        fire_request(hook, "WS", "logout", 0.1, None, {})


def test_a_hook_of_another_kind_gets_its_own_fire() -> None:
    class Hook(EventHook):
        def fire(self, **kw):
            self.got = kw

    hook = Hook()
    fire_request(hook, "WS", "heartbeat", 0.3, None, {"code": 0})
    assert hook.got == {"request_type": "WS", "name": "heartbeat", "response_time": 0.3, "response_length": 0,
                        "exception": None, "context": {"code": 0}}
