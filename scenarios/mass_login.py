"""mass_login: login storms. Each user connects and logs in with its own account, holds the
session online with (staggered) heartbeats for ``hold_s``, logs out / disconnects, repeats.
A user whose connect or login failed waits 0.5-1.5 s before its next attempt (no retry storm).
With ``hold_s`` 0 (pure connect/login/close storms) a connection gets no heartbeat timer and
the next flow starts at once. The UserSig (local source) is reused while more than half of its
lifetime remains, as an app caches the sig its business server issued; one the server refused
as expired or revoked is dropped, so the next flow signs a new one.

Open model (``arrival_rate`` > 0): one scheduler per process starts flows at the target rate
(split across workers); each flow's rows carry ``intended`` = its scheduled slot, so latency
includes queueing; slots that cannot start (``max_concurrent`` flows in flight) are journaled
as ``dropped``.
"""
from __future__ import annotations

import random
import time

import gevent
from gevent.pool import Group
from locust import task

from harness.protocol import FRESH_SIG_CODES
from harness.runner.users import ChatUser


class MassLogin(ChatUser):
    scenario = "mass_login"
    flows: Group | None = None
    is_scheduler = False

    def __init__(self, environment) -> None:  # noqa: ANN001
        super().__init__(environment)
        # every key on_start sets, first set here: Python 3.11 sizes an instance's attribute
        # array from the keys its class had when it was made, and Locust makes a spawn batch
        # of users before the first one runs on_start: a key added later turns that user's
        # attributes into a full dict (~0.45 KiB more per user)
        self.sc = None
        self.account = ""

    def on_start(self) -> None:
        super().on_start()
        self.sc = self.cfg.scenarios.mass_login
        if self.sc.arrival_rate > 0:  # open model only (closed: the class defaults, no keys per user)
            self.flows = Group()
            self.is_scheduler = not getattr(self.rt, "open_scheduler_taken", False)
            self.rt.open_scheduler_taken = True
        self.account = self.acquire() if not self.sc.arrival_rate else ""

    def flow(self, account: str, intended: int | None = None) -> bool:
        """connect -> login -> hold (heartbeats) -> logout -> disconnect; True when it logged in."""
        sc = self.sc
        d = self.device(heartbeat_s=sc.heartbeat_s if sc.hold_s > 0 else None)
        try:
            if not d.connect(intended=intended).ok:
                return False
            sig = self.fetch_sig(account, self.cfg.usersig.expire_s, platform=d.platform, conn=d.conn, fresh=False)
            if sig is None:
                return False
            res = d.login(account, sig, intended=intended)
            if not res.ok:
                if res.code in FRESH_SIG_CODES:
                    self.forget_sig(account)
                return False
            del sig, res  # nothing but the device stays referenced while the session is held
            if sc.hold_s > 0:  # hold 0: straight on (an Event.wait(0) is a timer and a trip through the hub)
                d.wait_disconnected(sc.hold_s)
            if sc.logout and d.logged_in:
                d.logout()
            return True
        finally:
            self.drop_device(d)

    @task
    def storm(self) -> None:
        if self.sc.arrival_rate > 0:
            if self.is_scheduler:
                self.schedule()
            else:
                self.sleep(1.0)
            return
        if not self.flow(self.account):
            # no instant retry: a struggling target must not get a reconnect storm on top
            self.sleep(random.uniform(0.5, 1.5))

    def schedule(self) -> None:
        """Start flows at ``arrival_rate / processes`` per second until the user is stopped."""
        sc = self.sc
        procs = max(1, getattr(self.rt, "processes", 1))
        rate = sc.arrival_rate / procs
        period_ns = int(1e9 / rate)
        # workers interleave their slots instead of all arriving at the same instants
        t0 = time.time_ns() + period_ns * (getattr(self.rt, "worker_index", 0) % procs) // procs
        i = 0
        while True:
            slot = t0 + i * period_ns
            i += 1
            delay = (slot - time.time_ns()) / 1e9
            if delay > 0:
                gevent.sleep(delay)
            if len(self.flows) >= sc.max_concurrent:
                now = time.time_ns()
                self.emit("dropped", outcome="fail", code=-1, start=now, end=now, intended=slot,
                          desc="max_concurrent flows in flight")
                continue
            account = self.rt.pool(self.scenario).acquire()
            if account is None:
                now = time.time_ns()
                self.emit("dropped", outcome="fail", code=-1, start=now, end=now, intended=slot,
                          desc="account pool exhausted")
                continue
            self.flows.spawn(self._open_flow, account, slot)

    def _open_flow(self, account: str, slot: int) -> None:
        try:
            self.flow(account, intended=slot)
        finally:
            self.release(account)

    def on_stop(self) -> None:
        if self.flows is not None:
            self.flows.kill(block=True, timeout=5)
        super().on_stop()
        if self.account:
            self.release(self.account)
            self.account = ""
