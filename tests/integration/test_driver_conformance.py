"""The driver conformance suite (harness/drivers/conformance.py) against live targets: the
``tim`` driver against the reference server. Real XMPP servers join in test_xmpp_conformance.py."""
from __future__ import annotations

import itertools
import os

import pytest

from harness.drivers.conformance import CASES, ConformanceTarget, run_case
from harness.drivers.tim import TimDriver

from .conftest import SDKAPPID, ServerProc

_n = itertools.count()


@pytest.fixture
def tim_target(server: ServerProc) -> ConformanceTarget:
    run = f"cf{os.getpid() % 1000}x{next(_n)}"

    def user(i: int) -> tuple[str, str]:
        u = f"{run}_{i}"
        return u, server.sig(u)

    return ConformanceTarget(
        name="tim/reference",
        make=lambda sink: TimDriver(server.ws_url, sdk_app_id=SDKAPPID, sink=sink),
        user=user,
        bad_credential=lambda u: server.sig(u)[:-8] + "AAAAAAA_",
        kick_mode="other_instance",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_tim_driver_conforms(case: str, tim_target: ConformanceTarget) -> None:
    run_case(case, tim_target)


def test_a_broken_driver_fails_the_suite(server: ServerProc) -> None:
    """The suite can fail: a driver that reports the login's answer after returning is caught."""

    class LateAnswer(TimDriver):
        def login(self, *a, **kw):  # type: ignore[override]
            sink, self.sink = self.sink, None
            try:
                return super().login(*a, **kw)
            finally:
                self.sink = sink

    target = ConformanceTarget(
        name="broken", make=lambda sink: LateAnswer(server.ws_url, sdk_app_id=SDKAPPID, sink=sink),
        user=lambda i: (f"brk{os.getpid() % 1000}_{i}", server.sig(f"brk{os.getpid() % 1000}_{i}")),
        bad_credential=lambda u: "x")
    with pytest.raises(AssertionError):
        run_case("login_ok_in_wire_order", target)
