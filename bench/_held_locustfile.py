"""Locustfile of bench/held_requests.py: the harness (plugin, runtime, journal, Device/ChatClient
over the tim driver, unchanged) with one bench User: each user connects and logs in once, then
loops request/response on that held connection: heartbeat, status, logout, login (the same
account, the cached UserSig), each one journaled and fired as a request event like any
scenario's. Runs as scenario ``mass_login`` (its account pool and client settings).
"""
from __future__ import annotations

import locust  # noqa: F401  (first: gevent monkey-patching)

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

from locust import events, task  # noqa: E402

from harness.runner.plugin import install  # noqa: E402
from harness.runner.users import ChatUser  # noqa: E402


class HeldRequests(ChatUser):
    scenario = "mass_login"

    def on_start(self) -> None:
        super().on_start()
        self.account = self.acquire()
        self.sig = self.fetch_sig(self.account, self.cfg.usersig.expire_s, fresh=False)
        self.d = self.device(reconnect=False)
        self.up = bool(self.sig) and self.d.connect().ok and self.d.login(self.account, self.sig).ok

    @task
    def requests(self) -> None:
        d = self.d
        if not self.up or not d.client.connected:
            self.sleep(1.0)
            return
        d.heartbeat()
        d.status()
        d.logout()
        d.login(self.account, self.sig)


install(events)
