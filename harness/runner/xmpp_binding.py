"""Binding a run to an XMPP target: a harness-started ejabberd / Prosody, or an external XMPP
server (``--host xmpp://HOST:PORT``, or ``ws://...`` with ``target.protocol: xmpp``).

What it decides, once per run (master or local process), before any user starts:

* the credential kind (``target.xmpp.auth``; ``auto`` = ``jwt`` when ``relogin_expiry`` runs on
  ejabberd, the only one with expiring tickets here; ``password`` otherwise) and the source
  (:class:`~harness.sources.JwtSource` / :class:`~harness.sources.PasswordSource`);
* refusals, each one line (exit 2): ``relogin_expiry`` on a server without expiring tickets;
  a policy the server cannot enforce (the target class says so);
* the accounts every selected scenario may use (pools capped at ``target.xmpp.accounts_max``
  per scenario and worker), created in bulk on a harness-started server;
* the admin view the switch and race scenarios cross-check (``query_online``), where the
  server has one: :class:`XmppAdminView`.

Workers receive :func:`worker_spec` in the master's target message and rebuild the same
binding with :func:`bind_worker` (same credentials, same admin view, no server start).
"""
from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gevent.lock import Semaphore

from harness.config import Config
from harness.errors import ConfigError
from harness.sources import JwtSource, PasswordSource

log = logging.getLogger("harness")

#: the scenario that needs credentials which expire
EXPIRING_SCENARIO = "relogin_expiry"


def unsupported_scenarios(cfg: Config, wanted: list[str]) -> dict[str, str]:
    """Scenarios this XMPP target cannot run: scenario -> why. A scenario asked for by name
    (``--scenario``) that cannot run is a ConfigError (one line, exit 2); in the default mix it
    is left out and named in summary.json (``scenarios_not_run``), never a silent zero."""
    t = cfg.target
    expiring = t.xmpp.auth == "jwt" or (t.xmpp.auth == "auto" and (t.kind == "ejabberd" or
                                                                 (t.kind == "external" and bool(t.xmpp.jwt_key))))
    if expiring:
        return {}
    why = {"prosody": "Prosody 0.12 has no working expiring-token login in Debian"}.get(t.kind, "password logins never expire")
    if EXPIRING_SCENARIO in wanted:
        choose_auth(cfg, [EXPIRING_SCENARIO])  # raises the one-line ConfigError
    if wanted:
        return {}
    return {EXPIRING_SCENARIO: f"needs expiring tickets; {t.kind} with auth {t.xmpp.auth} has none ({why})"}


def choose_auth(cfg: Config, scenarios: list[str]) -> str:
    """``password`` or ``jwt`` for this run; ConfigError (one line) when the mix cannot run."""
    t = cfg.target
    auth = t.xmpp.auth
    needs_expiry = EXPIRING_SCENARIO in scenarios
    if auth == "auto":
        auth = "jwt" if (needs_expiry and t.kind in ("ejabberd", "external")) else "password"
        if t.kind == "external" and needs_expiry and not t.xmpp.jwt_key:
            auth = "password"
    if needs_expiry and auth != "jwt":
        where = {"prosody": "Prosody 0.12 has no working expiring-token login in Debian"}.get(
            t.kind, "password logins never expire")
        raise ConfigError("scenarios.relogin_expiry",
                          f"needs expiring tickets, and on {t.kind} with auth {auth} there are none ({where}); "
                          "leave it out (--scenario mass_login,account_switch,kick_race) or use "
                          "target.kind=ejabberd (JWT tokens, configured by the harness)")
    if auth == "jwt" and t.kind == "prosody":
        raise ConfigError("target.xmpp.auth", "prosody cannot use jwt (no token login in Prosody 0.12); use password")
    return auth


#: accounts one user of a scenario holds at once
ACCOUNTS_PER_USER = {"account_switch": lambda cfg: cfg.scenarios.account_switch.chain}


def pool_sizes(cfg: Config, scenarios: list[str], users: int | None) -> dict[str, int]:
    """Accounts per scenario pool and worker: the scenario's ``accounts``, at most what ``users``
    concurrent users can hold (when known: headless ``-u``), at most ``target.xmpp.accounts_max``."""
    out = {}
    for name in scenarios:
        n = min(cfg.scenario(name).accounts, cfg.target.xmpp.accounts_max)
        if users:
            n = min(n, users * ACCOUNTS_PER_USER.get(name, lambda _c: 1)(cfg))
        out[name] = n
    return out


def pool_accounts(cfg: Config, sizes: dict[str, int], processes: int) -> list[str]:
    """Every account the pools can hand out (runtime.AccountPool naming: ``<prefix><worker>_<j>``)."""
    out: list[str] = []
    for name, n in sizes.items():
        prefix = cfg.scenario(name).account_prefix
        for tag in range(max(1, processes)):
            out.extend(f"{prefix}{tag}_{j}" for j in range(n))
    return out


class XmppAdminView:
    """The server's own view of who is online, in the shape of Tencent's
    ``query_online_status`` (what the switch and race scenarios cross-check); ``None`` from
    :func:`admin_view` when the server has none. Calls are serialized (one admin channel)."""

    available = True

    def __init__(self, target: Any) -> None:
        self.target = target
        self._lock = Semaphore(1)

    def query_online(self, user_ids: list[str], detail: bool = True) -> tuple[int, dict]:
        result = []
        with self._lock:
            for user in user_ids:
                try:
                    resources = self.target.online_resources(user)
                except Exception as exc:  # noqa: BLE001 - an admin call that fails is an info, not a crash
                    return -1, {"ErrorInfo": f"{self.target.kind} admin view: {type(exc).__name__}: {exc}"}
                if resources is None:
                    return -1, {"ErrorInfo": f"{self.target.kind} has no admin view of sessions"}
                result.append({"To_Account": user, "Status": "Online" if resources else "Offline",
                               "Detail": [{"Platform": "", "Status": "Online", "Resource": r} for r in resources]})
        return 0, {"QueryResult": result}

    def kick(self, user_id: str) -> tuple[int, dict]:
        with self._lock:
            try:
                n = self.target.kick_user(user_id)
            except Exception as exc:  # noqa: BLE001
                return -1, {"ErrorInfo": f"{type(exc).__name__}: {exc}"}
        return (0, {"Kicked": n}) if n is not None else (-1, {"ErrorInfo": "no admin kick"})


def start_server(cfg: Config, run_dir: Path, scenarios: list[str], processes: int,
                 users: int | None = None) -> tuple[Any, dict]:
    """Start the harness's own ejabberd / Prosody for this run, create its accounts; returns
    ``(target, spec)`` where ``spec`` is what :func:`bind` (and workers) need."""
    from harness.targets.xmpp_servers import make_target

    t = cfg.target
    auth = choose_auth(cfg, scenarios)
    key = bytes.fromhex(t.xmpp.jwt_key) if t.xmpp.jwt_key else secrets.token_bytes(32)
    policy = t.policy if t.policy != "auto" else None
    max_sessions = getattr(t, "max_sessions", None) if t.policy == "max_sessions" else None
    server = make_target(t.kind, run_dir, domain=t.xmpp.domain, policy=policy, max_sessions=max_sessions,
                         auth=auth, jwt_key=key if auth == "jwt" else None, jwt_field=t.xmpp.jwt_field,
                         tls=t.xmpp.tls == "always")
    server.require_available()
    server.start(timeout=max(t.startup_timeout_s, 60.0))
    secret = secrets.token_hex(16)
    spec = {"kind": t.kind, "auth": auth, "jwt_key": key.hex() if auth == "jwt" else "", "secret": secret,
            "host": server.host, "port": server.http_port if t.xmpp.transport == "ws" else server.c2s_port,
            "domain": t.xmpp.domain,
            "transport": t.xmpp.transport, "ws_path": t.xmpp.ws_path or server.ws_path,
            "http_port": getattr(server, "http_port", 0), "policy": server.policy,
            "max_sessions": server.max_sessions}
    sizes = pool_sizes(cfg, scenarios, users)
    spec["accounts"] = sizes
    if auth == "password":
        creds = PasswordSource(secret, password=t.xmpp.password)
        accounts = pool_accounts(cfg, sizes, processes)
        log.info("%s: creating %d accounts ...", t.kind, len(accounts))
        made = server.create_accounts(accounts, creds.get)
        log.info("%s %s on %s:%s (policy %s), %d accounts", t.kind, server.version(), server.host, server.c2s_port,
                 server.policy, made)
    return server, spec


def external_spec(cfg: Config, scenarios: list[str]) -> dict:
    """The binding of an external XMPP server given by ``target.host``."""
    t = cfg.target
    u = urlsplit(t.host)
    auth = choose_auth(cfg, scenarios)
    transport = "ws" if u.scheme in ("ws", "wss") else t.xmpp.transport if u.scheme != "xmpp" else "tcp"
    return {"kind": "external", "auth": auth, "jwt_key": t.xmpp.jwt_key, "secret": t.xmpp.password or "external",
            "host": u.hostname or "", "port": u.port or (5222 if u.scheme == "xmpp" else 80),
            "domain": t.xmpp.domain, "transport": transport, "ws_path": u.path or t.xmpp.ws_path or "/ws",
            "http_port": 0, "policy": t.policy, "max_sessions": getattr(t, "max_sessions", None), "accounts": {}}


def bind(rt: Any, cfg: Config, spec: dict, server: Any = None) -> None:
    """Point ``rt`` (a Runtime) at the XMPP target described by ``spec``."""
    t = cfg.target
    if spec["auth"] == "jwt":
        if not spec.get("jwt_key"):
            raise ConfigError("target.xmpp.jwt_key", "auth jwt on an external server needs the server's HS256 key (hex)")
        creds: Any = JwtSource(bytes.fromhex(spec["jwt_key"]), spec["domain"], jid_field=t.xmpp.jwt_field)
    else:
        creds = PasswordSource(spec["secret"], password=t.xmpp.password)
    admin = XmppAdminView(server) if server is not None else None
    scheme = "ws" if spec["transport"] == "ws" else "xmpp"
    url = f"{scheme}://{spec['host']}:{spec['port']}" + (spec["ws_path"] if scheme == "ws" else "")
    rt.bind_xmpp(host=spec["host"], port=spec["port"], credentials=creds, admin=admin, url=url,
                 domain=spec["domain"], transport=spec["transport"], ws_path=spec["ws_path"],
                 mechanism=t.xmpp.mechanism, tls=t.xmpp.tls)
