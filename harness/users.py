"""Abstract Locust User for chat scenarios: wires simulated SDK clients to Locust's request
event (live stats) and to the journal (truth). One finished operation = one ``emit`` = one
request event + one journal row, so the two always reconcile.

``Device`` is one simulated SDK instance (a ChatClient) with its journaling listener; a
ChatUser owns one or more devices.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from locust import User, constant

from harness.client import ChatClient, ClientListener, OpResult
from harness.protocol import code_label
from harness.sources import SigFetchError

if TYPE_CHECKING:  # pragma: no cover
    from harness.runtime import Runtime

REQUEST_TYPES = {"connect": "WS", "login": "WS", "logout": "WS", "status": "WS", "heartbeat": "WS",
                 "relogin": "WS", "switch": "WS", "race": "WS", "disconnect": "WS",
                 "usersig_fetch": "REST", "query_online": "REST", "rest_kick": "REST",
                 "kicked_offline": "EVENT", "sig_expired": "EVENT",
                 "fault": "INTERNAL", "dropped": "INTERNAL"}


class OpFailure(Exception):
    """What Locust shows in its failures table: the code label (low cardinality)."""


def failure_text(outcome: str, code: int, desc: str) -> str:
    if code == -1:
        return f"-1 {desc or 'transport error'}" if outcome == "fail" else f"-1 no answer ({desc or 'unknown'})"
    if code == 0:
        return desc or "check failed"
    return code_label(code)


class Device(ClientListener):
    """One simulated SDK instance of a user, journaling everything it sees."""

    def __init__(self, user: "ChatUser", platform: str, instance: str, *, race: str | None = None,
                 heartbeat_s: float | None = None) -> None:
        super().__init__()
        self.user = user
        self.rt = user.rt
        self.platform = platform
        self.instance = instance
        self.race = race
        self.conn = self.rt.next_conn_id()
        self.account = ""  # the account currently logged in (or last tried)
        self.kicks: list[tuple[str, str, Any, int]] = []     # (session, reason, by, at_ns)
        self.expiries: list[tuple[str, int]] = []            # (session, at_ns)
        self.kicked = Event()
        self.expired = Event()
        self.disconnected = Event()
        self.client = ChatClient(
            self.rt.ws_url, sdk_app_id=self.rt.sdk_app_id, platform=platform, instance_id=instance,
            listener=self, connect_timeout=self.rt.cfg.client.connect_timeout_s,
            request_timeout=self.rt.cfg.client.request_timeout_s, heartbeat_interval=heartbeat_s,
            source_address=self.rt.next_source_address(), conn_id=self.conn)

    # ---------------------------------------------------------------- journaling
    def _fields(self) -> dict:
        return {"platform": self.platform, "instance": self.instance, "conn": self.conn, "race": self.race}

    def record(self, res: OpResult, *, op: str | None = None, user: str | None = None,
               intended: int | None = None, **extra: Any) -> OpResult:
        extra = {**self._fields(), **extra}
        self.user.emit(op or res.op, outcome=res.outcome, code=res.code, start=res.start_ns, end=res.end_ns,
                       intended=intended, user=self.account if user is None else user,
                       session=extra.pop("session", res.session_id), desc=res.desc, **extra)
        return res

    # ---------------------------------------------------------------- operations
    def connect(self, intended: int | None = None) -> OpResult:
        return self.record(self.client.connect(), user="", intended=intended)

    def login(self, account: str, sig: str, intended: int | None = None) -> OpResult:
        self.account = account
        res = self.client.login(account, sig)
        extra: dict[str, Any] = {}
        if res.outcome == "ok" and res.data:
            extra["kicked"] = [k.get("sessionID") for k in res.data.get("kicked") or [] if isinstance(k, dict)]
            extra["expire_at"] = res.data.get("sigExpireAt")
        return self.record(res, user=account, intended=intended, **extra)

    def logout(self) -> OpResult:
        session = self.client.session_id
        res = self.client.logout()
        return self.record(res, session=session)

    def status(self) -> OpResult:
        res = self.client.status()
        data = res.data or {}
        return self.record(res, session=data.get("sessionID"),
                           data={"status": data.get("status"), "userID": data.get("userID"),
                                 "sessionID": data.get("sessionID")} if res.outcome == "ok" else None)

    def heartbeat(self) -> OpResult:
        return self.record(self.client.heartbeat())

    def close(self) -> None:
        self.client.close()

    @property
    def logged_in(self) -> bool:
        return self.client.get_login_status() == 1

    # ---------------------------------------------------------------- listener callbacks
    def on_kicked_offline(self, session_id: str, reason: str, by: dict | None, at_ns: int) -> None:
        self.kicks.append((session_id, reason, by, at_ns))
        by_sid = by.get("sessionID") if isinstance(by, dict) else None
        self.user.emit("kicked_offline", outcome="ok", code=0, start=at_ns, end=at_ns, user=self.account,
                       session=session_id, desc=reason, by=by_sid, **self._fields())
        self.kicked.set()

    def on_user_sig_expired(self, session_id: str, at_ns: int) -> None:
        self.expiries.append((session_id, at_ns))
        self.user.emit("sig_expired", outcome="ok", code=0, start=at_ns, end=at_ns, user=self.account,
                       session=session_id, **self._fields())
        self.expired.set()

    def on_disconnected(self, session_id: str | None, by_client: bool, reason: str, at_ns: int) -> None:
        self.user.emit("disconnect", outcome="ok" if by_client else "info", code=0 if by_client else -1,
                       start=at_ns, end=at_ns, user=self.account, session=session_id,
                       desc="closed_by_client" if by_client else (reason or "closed_by_server"), **self._fields())
        self.disconnected.set()

    def on_heartbeat(self, result: OpResult) -> None:
        self.record(result)


class ChatUser(User):
    """Abstract base of scenario Users. Subclasses set ``scenario`` and write tasks."""

    abstract = True
    scenario = ""
    wait_time = constant(0)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.rt: Runtime = environment.chat
        self.cfg = self.rt.cfg
        self.devices: list[Device] = []

    # ---------------------------------------------------------------- emit
    def emit(self, op: str, *, outcome: str, code: int, start: int, end: int, intended: int | None = None,
             user: str = "", session: str | None = None, desc: str = "", platform: str = "", instance: str = "",
             **extra: Any) -> None:
        """Fire Locust's request event and append the journal row for one finished operation."""
        began = start if intended is None else intended
        exc = None if outcome == "ok" else OpFailure(failure_text(outcome, code, desc))
        detail = desc if outcome == "ok" or code in (0, -1) else code_label(code)
        self.environment.events.request.fire(
            request_type=REQUEST_TYPES.get(op, "WS"), name=op, response_time=max(0.0, (end - began) / 1e6),
            response_length=0, exception=exc, context={"scenario": self.scenario, "user": user, "code": code})
        self.rt.journal.record(scenario=self.scenario, op=op, outcome=outcome, code=code, start=start, end=end,
                               intended=intended, user=user, platform=platform, instance=instance,
                               session=session, detail=detail, **extra)

    # ---------------------------------------------------------------- helpers
    def device(self, platform: str | None = None, instance: str | None = None, **kw: Any) -> Device:
        d = Device(self, platform or self.cfg.client.platform, instance or self.rt.new_instance_id(), **kw)
        self.devices.append(d)
        return d

    def drop_device(self, d: Device) -> None:
        d.close()
        if d in self.devices:
            self.devices.remove(d)

    def fetch_sig(self, account: str, expire: int, *, platform: str = "", conn: str | None = None) -> str | None:
        """A UserSig from the configured source; http fetches are journaled as ``usersig_fetch``."""
        src = self.rt.sig_source
        if not src.journaled:
            return src.get(account, expire)
        start = time.time_ns()
        try:
            sig = src.get(account, expire)
        except SigFetchError as exc:
            self.emit("usersig_fetch", outcome="fail" if exc.code != -1 else "info", code=exc.code, start=start,
                      end=time.time_ns(), user=account, desc=exc.desc, platform=platform, conn=conn)
            return None
        self.emit("usersig_fetch", outcome="ok", code=0, start=start, end=time.time_ns(), user=account,
                  platform=platform, conn=conn)
        return sig

    def query_online(self, accounts: list[str], *, conn: str | None = None, race: str | None = None) -> dict | None:
        """REST query_online_status (journaled as ``query_online``); None when REST is unavailable."""
        rest = self.rt.rest
        if rest is None or not rest.available:
            return None
        start = time.time_ns()
        code, body = rest.query_online(accounts)
        end = time.time_ns()
        ok = code == 0
        result = body.get("QueryResult") if ok else None
        self.emit("query_online", outcome="ok" if ok else ("info" if code == -1 else "fail"), code=code,
                  start=start, end=end, user=",".join(accounts)[:200], desc="" if ok else str(body.get("ErrorInfo", "")),
                  conn=conn, race=race, data={"QueryResult": result} if ok else None)
        return {r.get("To_Account"): r for r in result or [] if isinstance(r, dict)} if ok else None

    def acquire(self, scenario: str | None = None) -> str:
        """An account from this scenario's pool; stops this user when the pool is exhausted."""
        from locust.exception import StopUser

        acc = self.rt.pool(scenario or self.scenario).acquire()
        if acc is None:
            import logging

            logging.getLogger("harness").warning("%s: account pool exhausted (scenarios.%s.accounts); user stops",
                                                 self.scenario, self.scenario)
            raise StopUser()
        return acc

    def release(self, account: str, scenario: str | None = None) -> None:
        self.rt.pool(scenario or self.scenario).release(account)

    def on_start(self) -> None:
        if not self.rt.wait_ready(60):
            from locust.exception import StopUser

            raise StopUser()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            gevent.sleep(seconds)

    def on_stop(self) -> None:
        for d in list(self.devices):
            d.close()
        self.devices.clear()
