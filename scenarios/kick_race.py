"""kick_race: K devices log in as the same user within ``window_ms``. Each device's outcome
and kick events are journaled; after ``settle_ms`` the survivors (client view) and REST
``query_online_status`` (server view) are compared with the policy's limits; op ``race``.
Each race takes its own account from the owner's pool, so races of different users never mix.

Two ways to start a race:

* local (default): all K devices live in this process; a gevent barrier releases them as
  soon as they are connected (send spread: a few µs per device).
* ``cross_worker: true`` in a distributed run: the devices are spread over the workers
  (device i on worker ``(owner + i) % n``); the master picks a shared start instant
  (``lead_ms`` ahead, unix ns) and every participant sleeps until it (coarse sleep, a
  yielding spin for the last 2 ms, a busy wait for the last 0.3 ms). Each participant journals its own devices' rows (login,
  kicked_offline, disconnect, ... with the race id) and sends their results to the owner
  (via the master); the owner writes the single ``race`` row with the merged device list
  (each device dict has ``i`` and ``w``), then tells the participants to close. Without a
  master (local role) cross_worker races run in-process with the same start-instant code.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import gevent
from gevent.pool import Group
from gevent.event import Event
from locust import task

from harness.protocol import MAX_SESSIONS_DEFAULT, group_limit, groups_by_instance, policy_group
from harness.runner.users import ChatUser, Device

SPIN_NS = 2_000_000   # the last 2 ms before a start instant are waited for by yielding, not sleeping
BUSY_NS = 300_000     # ... and the last 0.3 ms by a busy wait


def over_limit(policy: str, platforms: list[str], native: int, web: int, max_sessions: int = MAX_SESSIONS_DEFAULT,
               instances: list[str] | None = None) -> dict[str, int]:
    """Groups whose live-session count exceeds the policy limit: group -> count.

    ``instances`` (parallel to ``platforms``) are needed under ``unlimited``, which groups by
    instanceID (limit 1 each: only a same-instance duplicate is over the limit)."""
    insts: list[Any] = list(instances) if instances is not None else [None] * len(platforms)
    keys = [policy_group(policy, p, i) for p, i in zip(platforms, insts)]
    counts = Counter(keys)
    limits = {k: group_limit(policy, p, native, web, max_sessions) for k, p in zip(keys, platforms)}
    return {g: n for g, n in counts.items() if n > limits[g]}


def expected_survivors(policy: str, specs: list[dict], native: int, web: int,
                       max_sessions: int = MAX_SESSIONS_DEFAULT) -> int:
    """How many devices of a race (all logging in fine) the policy leaves alive."""
    by_instance = groups_by_instance(policy)
    keys = [policy_group(policy, d["platform"], d["instance"]) for d in specs]
    limits = {k: group_limit(policy, d["platform"], native, web, max_sessions) for k, d in zip(keys, specs)}
    counts = Counter(keys)
    return sum(min(n, 1 if by_instance else limits[k]) for k, n in counts.items())


def device_specs(race: str, devices: int, platforms: list[str], same_instance: bool) -> list[dict]:
    """Platform and instanceID of each device of a race (device i uses platforms[i % len])."""
    return [{"i": i, "platform": platforms[i % len(platforms)],
             "instance": f"{race}-same" if same_instance else f"{race}-d{i}"} for i in range(devices)]


def send_spread_ms(rows: list[dict]) -> float | None:
    """max - min of the devices' login send times (ms); None when fewer than one was sent."""
    sent = [r["sent"] for r in rows if r.get("sent")]
    return (max(sent) - min(sent)) / 1e6 if sent else None


def race_span(released: int, rows: list[dict], judged_ns: int) -> tuple[int, int, float]:
    """(start, end, settle_ms) of a ``race`` row: it is timed from the barrier's release to the
    last device's answer (unix ns), so its latency is the race's, not the settle wait's;
    ``settle_ms`` = from that last answer to the verdict (settle wait + query_online), ms."""
    start = min(released, judged_ns)
    done = [r["done"] for r in rows if isinstance(r.get("done"), int)]
    end = min(max(max(done), start), judged_ns) if done else start
    return start, end, max(0.0, (judged_ns - end) / 1e6)


def judge(rows: list[dict], online: list | None, policy: str, native: int, web: int,
          max_sessions: int = MAX_SESSIONS_DEFAULT) -> list[str]:
    """What is wrong with a settled race (empty = fine).

    Under ``unlimited`` every device with its own instanceID survives and a same-instance
    race leaves one: a device of another instance that was kicked is a problem too. The REST
    Detail list has no instanceID, so there the server view may show at most one Online per
    distinct instance of the race."""
    problems = []
    alive = [r for r in rows if r.get("alive")]
    over = over_limit(policy, [r["platform"] for r in alive], native, web, max_sessions,
                      [r.get("instance") for r in alive])
    if over:
        problems.append(f"client view over limit: {over}")
    by_instance = groups_by_instance(policy)
    if by_instance:
        instance_of = {r.get("session"): r.get("instance") for r in rows if r.get("session")}
        wrong = sorted(r["session"] for r in rows if r.get("session") and r.get("kicked_by")
                       and instance_of.get(r["kicked_by"], r.get("instance")) != r.get("instance"))
        if wrong:
            problems.append(f"evicted by another instance: {wrong}")
    if online is not None:
        # an admin view without platforms (XMPP: resources only) is mapped through the race's instances
        platform_of = {r.get("instance"): r.get("platform") for r in rows if r.get("instance")}
        fallback = rows[0].get("platform", "") if rows else ""
        n_online = [o.get("Platform") or platform_of.get(o.get("Resource")) or fallback
                    for o in online if o.get("Status") == "Online"]
        if by_instance:
            distinct = len({r.get("instance") for r in rows if r.get("instance")})
            if distinct and len(n_online) > distinct:
                problems.append(f"server view over limit: {len(n_online)} Online for {distinct} instance(s)")
        else:
            over_srv = over_limit(policy, n_online, native, web, max_sessions)
            if over_srv:
                problems.append(f"server view over limit: {over_srv}")
    if any(r.get("code") == 0 for r in rows) and not any(r.get("alive") for r in rows):
        problems.append("no survivor although logins succeeded")
    return problems


def wait_until(start_ns: int) -> None:
    """Sleep until the unix-ns instant: coarse sleep, yield-spin until 0.3 ms before, then a
    busy wait (blocks this process's other greenlets for at most 0.3 ms)."""
    delay = start_ns - SPIN_NS - time.time_ns()
    if delay > 0:
        gevent.sleep(delay / 1e9)
    while time.time_ns() < start_ns - BUSY_NS:
        gevent.sleep(0)
    while time.time_ns() < start_ns:
        pass


class RaceDevices(ChatUser):
    """Never spawned by Locust: journals this worker's devices of cross-worker races."""

    abstract = True
    scenario = "kick_race"


class RacePart:
    """This process's devices of one race: connect, log in together, settle, report."""

    def __init__(self, user: ChatUser, race: str, account: str, specs: list[dict], *,
                 window_ms: float, settle_ms: float) -> None:
        self.user = user
        self.race = race
        self.account = account
        self.window_ms = window_ms
        self.settle_ms = settle_ms
        self.devices: list[tuple[int, Device]] = []
        shared = bool(user.rt.cfg.scenarios.kick_race.same_instance)
        for spec in specs:
            d = user.device(platform=spec["platform"], instance=spec["instance"], race=race, same_instance=shared)
            d.account = account
            self.devices.append((int(spec["i"]), d))
        self.results: dict[int, Any] = {}
        self.released_ns: int | None = None   # when the barrier opened (unix ns)
        self.greenlets = Group()              # connect/login greenlets: killed with the part

    @classmethod
    def for_go(cls, environment: Any, go: dict) -> "RacePart":
        """A part from the master's ``chat_race_go`` (devices journaled by the worker's helper)."""
        rt = environment.chat
        if rt.races.helper is None:
            rt.races.helper = RaceDevices(environment)
        sc = rt.cfg.scenarios.kick_race
        return cls(rt.races.helper, go["race"], go["user"], list(go.get("devices") or []),
                   window_ms=float(go.get("window_ms", sc.window_ms)),
                   settle_ms=float(go.get("settle_ms", sc.settle_ms)))

    def run(self, start_ns: int | None) -> list[dict]:
        """Connect, log in at ``start_ns`` (unix ns; None = as soon as connected), settle;
        the device rows for the ``race`` row."""
        rt, cfg = self.user.rt, self.user.cfg
        if not rt.wait_ready(cfg.client.connect_timeout_s):
            return self.rows()
        devs = [d for _i, d in self.devices]
        gevent.joinall([self.greenlets.spawn(d.connect) for d in devs], timeout=cfg.client.connect_timeout_s + 1)
        ready = [(i, d) for i, d in self.devices if d.client.connected]
        if not ready:
            return self.rows()
        sig = self.user.fetch_sig(self.account, cfg.usersig.expire_s, conn=ready[0][1].conn)
        if sig is None:
            return self.rows()
        go = Event()
        window = self.window_ms

        def login(i: int, d: Device) -> None:
            go.wait()
            if window:
                gevent.sleep(random.uniform(0, window) / 1000.0)
            self.results[i] = d.login(self.account, sig)

        greenlets = [self.greenlets.spawn(login, i, d) for i, d in ready]
        gevent.sleep(0)  # let every device reach the barrier
        if start_ns:
            wait_until(start_ns)
        self.released_ns = time.time_ns()
        go.set()
        gevent.joinall(greenlets, timeout=cfg.client.request_timeout_s + window / 1000.0 + 1)
        gevent.sleep(self.settle_ms / 1000.0)
        return self.rows()

    def rows(self) -> list[dict]:
        out = []
        w = self.user.rt.worker
        for i, d in self.devices:
            r = self.results.get(i)
            kick = d.kicks[-1] if d.kicks else None
            by = kick[2] if kick else None
            out.append({"i": i, "w": w, "platform": d.platform, "instance": d.instance,
                        "session": getattr(r, "session_id", None), "code": getattr(r, "code", -1),
                        "sent": getattr(r, "start_ns", None), "done": getattr(r, "end_ns", None),
                        "kicked_by": by.get("sessionID") if isinstance(by, dict) else None,
                        "alive": d.logged_in})
        return out

    @property
    def first_conn(self) -> str | None:
        return next((d.conn for _i, d in self.devices if d.client.connected), None)

    def close(self) -> None:
        # a user stopped mid-race must not leave greenlets that journal after the run ended
        self.greenlets.kill(block=True, timeout=5)
        for _i, d in self.devices:
            self.user.drop_device(d)


class KickRace(ChatUser):
    scenario = "kick_race"
    race_part = RacePart   # the runner's RaceHub runs cross-worker parts with this (no harness -> scenario import)

    def on_start(self) -> None:
        super().on_start()
        self.sc = self.cfg.scenarios.kick_race

    @task
    def race(self) -> None:
        started = self.run_race()
        # also after a race that could not start (target down): no hot loop of connects
        self.sleep(self.sc.pause_s if started else max(self.sc.pause_s, 0.5))

    def run_race(self) -> bool:
        """One race; False when it could not start (nothing connected, no sig)."""
        sc = self.sc
        account = self.acquire()
        race = self.rt.next_race_id()
        specs = device_specs(race, sc.devices, sc.platforms, sc.same_instance)
        part: RacePart | None = None
        try:
            if sc.cross_worker and self.rt.role == "worker":
                asked = time.time_ns()
                rows = self.rt.races.request(
                    {"race": race, "user": account, "devices": specs, "window_ms": sc.window_ms,
                     "settle_ms": sc.settle_ms, "lead_ms": sc.lead_ms, "hold_s": self._hold_s()},
                    expected=len(specs), timeout=self._hold_s())
                sent = [r["sent"] for r in rows if r.get("sent")]
                if not sent and len(rows) == len(specs):
                    return False  # nothing connected anywhere: the parts' connect rows say why
                released = min(sent) if sent else asked
                conn = None
            else:
                part = RacePart(self, race, account, specs, window_ms=sc.window_ms, settle_ms=sc.settle_ms)
                rows = part.run(time.time_ns() + int(sc.lead_ms * 1e6) if sc.cross_worker else None)
                if part.released_ns is None:
                    return False  # nothing connected / no sig: the connect / usersig_fetch rows say why
                released = part.released_ns
                conn = part.first_conn
            self.judge_and_record(race, account, rows, released, len(specs), conn)
            return True
        finally:
            if part is not None:
                part.close()
            elif sc.cross_worker and self.rt.role == "worker":
                self.rt.races.finish(race)
            self.release(account)

    def _hold_s(self) -> float:
        """How long the owner waits for every part (s): lead + connect + sig + login + settle + margin."""
        c, sc = self.cfg.client, self.sc
        return (sc.lead_ms + sc.window_ms + sc.settle_ms) / 1000.0 + c.connect_timeout_s + 2 * c.request_timeout_s + 5

    def judge_and_record(self, race: str, account: str, rows: list[dict], released: int, expected: int,
                         conn: str | None) -> None:
        sc, t = self.sc, self.cfg.target
        rows = sorted(rows, key=lambda r: r.get("i", 0))
        online = None
        if sc.query_online and rows:
            q = self.query_online([account], conn=conn, race=race)
            if q is not None:
                online = (q.get(account) or {}).get("Detail") or []
        survivors = [r["session"] for r in rows if r.get("alive")]
        problems = judge(rows, online, t.policy, t.native_instances, t.web_instances, t.max_sessions)
        outcome = "fail" if problems else "ok"
        if len(rows) < expected:
            got = {r.get("i") for r in rows}
            problems.append(f"no result from devices {sorted(set(range(expected)) - got)} (a worker went away?)")
            outcome = "fail" if outcome == "fail" else "info"
        data: dict[str, Any] = {"devices": rows, "settle_ms": sc.settle_ms, "send_spread_ms": send_spread_ms(rows),
                                "survivors": survivors, "online": online, "policy": t.policy,
                                "expected_survivors": expected_survivors(
                                    t.policy, [r for r in rows if r.get("code") == 0 and r.get("instance")],
                                    t.native_instances, t.web_instances, t.max_sessions)}
        if sc.cross_worker:
            data["workers"] = sorted({r.get("w") for r in rows if r.get("w")})
        judged_ns = time.time_ns()
        start, end, settle = race_span(released, rows, judged_ns)
        self.emit("race", outcome=outcome, code=0 if outcome != "info" else -1, start=start, end=end,
                  user=account, desc="; ".join(problems), race=race, conn=conn, data=data, settle_ms=settle)
