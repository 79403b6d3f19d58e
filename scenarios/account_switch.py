"""account_switch: one connection logs in alice, bob, carol, ... in quick succession with no
logout. After each switch ``get_login_user()``, the server's ``status`` and (optionally) REST
``query_online_status`` must name the latest account; the switched-from account must get no
``kickedOffline``. Op ``switch`` spans sending the new login to having checked it.
"""
from __future__ import annotations

import time

from locust import task

from harness.protocol import ERR_SDK_INTERFACE_NOT_SUPPORT
from harness.runner.users import ChatUser


class AccountSwitch(ChatUser):
    scenario = "account_switch"

    def on_start(self) -> None:
        super().on_start()
        self.sc = self.cfg.scenarios.account_switch
        self.accounts = [self.acquire() for _ in range(self.sc.chain)]

    @task
    def switch_chain(self) -> None:
        sc = self.sc
        d = self.device()
        try:
            if not d.connect().ok:
                self.sleep(1)
                return
            prev_user, prev_session = "", None
            for account in self.accounts:
                t0 = time.time_ns()
                sig = self.fetch_sig(account, self.cfg.usersig.expire_s, platform=d.platform, conn=d.conn)
                if sig is None:
                    return
                res = d.login(account, sig)
                if prev_user:
                    self.check_switch(d, res, account, prev_user, prev_session, t0)
                if not res.ok:
                    return
                prev_user, prev_session = account, res.session_id
                self.sleep(sc.pause_s)
            if d.logged_in:
                d.logout()
        finally:
            self.drop_device(d)

    def check_switch(self, d, res, account: str, prev_user: str, prev_session: str | None, t0: int) -> None:
        fields = {"platform": d.platform, "instance": d.instance, "conn": d.conn}
        if not res.ok:
            self.emit("switch", outcome=res.outcome, code=res.code, start=t0, end=res.end_ns, user=account,
                      desc=res.desc, data={"from_user": prev_user, "from_session": prev_session}, **fields)
            return
        login_user = d.client.get_login_user()
        st = d.status()
        server_view = st.code != ERR_SDK_INTERFACE_NOT_SUPPORT   # XMPP has no server-side status
        sdata = st.data or {}
        online = None
        if self.sc.query_online:
            q = self.query_online([account, prev_user], conn=d.conn)
            if q is not None:
                online = {u: (q.get(u) or {}).get("Status") for u in (account, prev_user)}
        problems = []
        if login_user != account:
            problems.append(f"getLoginUser={login_user!r}")
        if server_view and (sdata.get("userID") != account or sdata.get("status") != 1):
            problems.append(f"server status={sdata.get('status')} user={sdata.get('userID')!r}")
        if online is not None and (online.get(account) != "Online" or online.get(prev_user) != "Offline"):
            problems.append(f"online={online}")
        if any(k[0] == prev_session for k in d.kicks):
            problems.append("kickedOffline to the switched-from session")
        self.emit("switch", outcome="fail" if problems else "ok", code=0, start=t0, end=time.time_ns(),
                  user=account, session=res.session_id, desc="; ".join(problems),
                  data={"from_user": prev_user, "from_session": prev_session, "login_user": login_user,
                        "server_user": sdata.get("userID"), "server_status": sdata.get("status"),
                        "online": online, "server_view": server_view}, **fields)

    def on_stop(self) -> None:
        super().on_stop()
        for a in self.accounts:
            self.release(a)
        self.accounts = []
