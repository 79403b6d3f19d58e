"""Client CPU per XMPP login (connect + SASL + restart + bind + presence + close), XmppDriver
against the in-test fake server running in a child process (so only the client's CPU is counted).

    .venv/bin/python bench/bench_xmpp_driver_cpu.py [N] [MECH]

Prints µs of client CPU per login and logins/s (sequential, one greenlet). Not part of the tests.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _serve(port_q: "multiprocessing.Queue") -> None:
    from tests.integration.test_xmpp_driver_fake import FakeXmpp
    srv = FakeXmpp()
    port_q.put(srv.port)
    import gevent
    gevent.sleep(3600)


class _Sink:
    def login_answered(self, reply, user_id): pass
    def kicked(self, *a): pass
    def credential_expired(self, *a): pass
    def lost(self, *a): pass


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    mech = sys.argv[2] if len(sys.argv) > 2 else "PLAIN"
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_serve, args=(q,), daemon=True)
    child.start()
    try:
        port = q.get(timeout=10)
        from harness.drivers.xmpp import XmppDriver
        from tests.integration.test_xmpp_driver_fake import USERS
        drv = XmppDriver(host="127.0.0.1", port=port, domain="localhost", sink=_Sink(), mechanism=mech)
        for _ in range(20):  # warm-up (also fills the SCRAM salted-password cache)
            assert drv.connect(time.monotonic() + 5) is None
            assert drv.login("alice", USERS["alice"], "Android", "i", 5).outcome == "ok"
            drv.close()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            assert drv.connect(time.monotonic() + 5) is None
            r = drv.login("alice", USERS["alice"], "Android", "i", 5)
            assert r.outcome == "ok", r
            drv.close()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(f"{mech}: {n} logins, client CPU {cpu / n * 1e6:.0f} µs/login, {n / wall:.0f} logins/s sequential")
    finally:
        child.kill()
        child.join(5)


if __name__ == "__main__":
    main()
