"""relogin_expiry: tickets expiring in waves. Sigs get short, jittered lifetimes; on
``userSigExpired`` while online, or 70001/6206/70052 at login, the user fetches a fresh sig and
logs in again; op ``relogin`` spans expiry -> back online. Other codes are never retried.
"""
from __future__ import annotations

import random

from locust import task

from harness.sdk.client import OpResult
from harness.protocol import FRESH_SIG_CODES
from harness.runner.users import ChatUser, Device, wait_event

EXPIRY_CODES = FRESH_SIG_CODES  # the codes this scenario recovers from at login


class ReloginExpiry(ChatUser):
    scenario = "relogin_expiry"

    def on_start(self) -> None:
        super().on_start()
        self.sc = self.cfg.scenarios.relogin_expiry
        self.account = self.acquire()

    def lifetime(self) -> int:
        return self.sc.sig_lifetime_s + random.randint(0, self.sc.sig_jitter_s)

    def first_sig(self, d: Device) -> tuple[str | None, int | None]:
        """The sig of the first login and the code it provokes on purpose (the credential
        source's ``stale_code`` for a deliberately expired one, ``stale_login_ratio``; else None).
        Only sources that sign locally can make a stale credential (not http)."""
        stale = getattr(self.rt.sig_source, "stale", None)
        if self.sc.stale_login_ratio and stale is not None and random.random() < self.sc.stale_login_ratio:
            src = self.rt.sig_source
            return stale(self.account, self.lifetime(), ago_s=self.cfg.target.leeway_s + 30), src.stale_code
        return self.fetch_sig(self.account, self.lifetime(), platform=d.platform, conn=d.conn), None

    def relogin(self, d: Device, trigger: str | int, since_ns: int, old_session: str | None) -> OpResult | None:
        """Fresh sig, log in again; retried only on expiry codes, at most ``max_attempts``."""
        res: OpResult | None = None
        attempts = 0
        while attempts < self.sc.max_attempts:
            attempts += 1
            sig = self.fetch_sig(self.account, self.lifetime(), platform=d.platform, conn=d.conn)
            if sig is None:
                break
            res = d.login(self.account, sig)
            if res.ok or res.code not in EXPIRY_CODES:
                break
        if res is None:
            return None
        self.emit("relogin", outcome=res.outcome, code=res.code, start=since_ns, end=res.end_ns, user=self.account,
                  session=res.session_id, desc=res.desc, platform=d.platform, instance=d.instance, conn=d.conn,
                  data={"trigger": trigger, "old_session": old_session, "attempts": attempts})
        return res

    @task
    def ride(self) -> None:
        sc = self.sc
        d = self.device()
        try:
            if not d.connect().ok:
                self.sleep(1)
                return
            sig, expect = self.first_sig(d)
            if sig is None:
                return
            res = d.login(self.account, sig, expect=expect)
            if not res.ok:
                if res.code not in EXPIRY_CODES:
                    self.sleep(1)  # no login loop on non-expiry codes
                    return
                res = self.relogin(d, res.code, res.end_ns, None)
                if res is None or not res.ok:
                    return
            cycles = 0
            limit = sc.sig_lifetime_s + sc.sig_jitter_s + self.cfg.target.leeway_s + self.cfg.checks.expiry_tolerance_s + 10
            while cycles < sc.cycles:
                d.expired.clear()
                if not wait_event(d.expired, limit) or not d.expiries:
                    break  # kicked, disconnected or no push: the checks will say so
                old, at = d.expiries[-1]
                res = self.relogin(d, "sig_expired", at, old)
                cycles += 1
                if res is None or not res.ok:
                    break
            if d.logged_in:
                d.logout()
        finally:
            self.drop_device(d)

    def on_stop(self) -> None:
        super().on_stop()
        self.release(self.account)
