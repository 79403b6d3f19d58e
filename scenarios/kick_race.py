"""kick_race: K devices log in as the same user within ``window_ms`` (a gevent barrier
releases them together). Each device's outcome and kick events are journaled; after
``settle_ms`` the survivors (client view) and REST ``query_online_status`` (server view) are
compared with the policy's limits; op ``race``. Each race takes its own account from the pool,
so races of different users never mix.
"""
from __future__ import annotations

import random
import time
from collections import Counter

import gevent
from gevent.event import Event
from locust import task

from harness.protocol import group_limit, policy_group
from harness.users import ChatUser, Device


def over_limit(policy: str, platforms: list[str], native: int, web: int) -> dict[str, int]:
    """Groups whose live-session count exceeds the policy limit: group -> count."""
    counts = Counter(policy_group(policy, p) for p in platforms)
    limits = {policy_group(policy, p): group_limit(policy, p, native, web) for p in platforms}
    return {g: n for g, n in counts.items() if n > limits[g]}


class KickRace(ChatUser):
    scenario = "kick_race"

    def on_start(self) -> None:
        super().on_start()
        self.sc = self.cfg.scenarios.kick_race

    @task
    def race(self) -> None:
        sc, t = self.sc, self.cfg.target
        account = self.acquire()
        race = self.rt.next_race_id()
        shared = f"{race}-same"
        devices = [self.device(platform=sc.platforms[i % len(sc.platforms)],
                               instance=shared if sc.same_instance else f"{race}-d{i}", race=race)
                   for i in range(sc.devices)]
        try:
            for d in devices:
                d.account = account
            gevent.joinall([gevent.spawn(d.connect) for d in devices], timeout=self.cfg.client.connect_timeout_s + 1)
            ready = [d for d in devices if d.client.connected]
            sig = self.fetch_sig(account, self.cfg.usersig.expire_s, conn=ready[0].conn if ready else None)
            if not ready or sig is None:
                return
            go = Event()
            results: dict[int, object] = {}

            def run(i: int, d: Device) -> None:
                go.wait()
                if sc.window_ms:
                    gevent.sleep(random.uniform(0, sc.window_ms) / 1000.0)
                results[i] = d.login(account, sig)

            greenlets = [gevent.spawn(run, i, d) for i, d in enumerate(ready)]
            gevent.sleep(0)  # let every device reach the barrier
            released = time.time_ns()
            go.set()
            gevent.joinall(greenlets, timeout=self.cfg.client.request_timeout_s + 1)
            gevent.sleep(sc.settle_ms / 1000.0)
            rows = []
            for i, d in enumerate(ready):
                r = results.get(i)
                kick = d.kicks[-1] if d.kicks else None
                rows.append({"platform": d.platform, "instance": d.instance,
                             "session": getattr(r, "session_id", None), "code": getattr(r, "code", -1),
                             "sent": getattr(r, "start_ns", None), "done": getattr(r, "end_ns", None),
                             "kicked_by": (kick[2] or {}).get("sessionID") if kick and isinstance(kick[2], dict) else None,
                             "alive": d.logged_in})
            online = None
            if sc.query_online:
                q = self.query_online([account], conn=ready[0].conn, race=race)
                if q is not None:
                    online = (q.get(account) or {}).get("Detail") or []
            survivors = [r["session"] for r in rows if r["alive"]]
            sent = [r["sent"] for r in rows if r["sent"]]
            spread = (max(sent) - min(sent)) / 1e6 if sent else None
            problems = []
            over = over_limit(t.policy, [r["platform"] for r in rows if r["alive"]], t.native_instances, t.web_instances)
            if over:
                problems.append(f"client view over limit: {over}")
            if online is not None:
                over_srv = over_limit(t.policy, [o.get("Platform", "") for o in online if o.get("Status") == "Online"],
                                      t.native_instances, t.web_instances)
                if over_srv:
                    problems.append(f"server view over limit: {over_srv}")
            if any(r["code"] == 0 for r in rows) and not survivors:
                problems.append("no survivor although logins succeeded")
            self.emit("race", outcome="fail" if problems else "ok", code=0, start=released, end=time.time_ns(),
                      user=account, desc="; ".join(problems), race=race,
                      data={"devices": rows, "settle_ms": sc.settle_ms, "send_spread_ms": spread,
                            "survivors": survivors, "online": online, "policy": t.policy})
        finally:
            for d in devices:
                self.drop_device(d)
            self.release(account)
        self.sleep(sc.pause_s)
