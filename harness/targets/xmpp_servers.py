"""Real XMPP servers as targets: ejabberd and Prosody from Debian, started and owned by the harness.

``EjabberdTarget`` (harness/targets/ejabberd.py) and ``ProsodyTarget`` (harness/targets/prosody.py)
share ``XmppServerTarget`` (harness/targets/xmpp_base.py)::

    t = EjabberdTarget(run_dir, policy="single_platform")      # ConfigError for what it cannot do
    ok, why = t.available()                                     # (False, "ejabberd is not installed: apt-get install ejabberd")
    t.start(timeout=30)                                         # TargetError with the log tail if it does not come up
    t.create_accounts(users, password_for)                      # count created
    t.online_resources("alice"); t.kick_user("alice"); t.connected_count()
    t.describe()                                                # for summary.json
    t.stop()                                                    # also at exit; idempotent

Notes (measured on this box, Debian 12, 2 shared cores):

Versions found: ejabberd 23.01 (Debian 23.01-1, Erlang/OTP 25), Prosody 0.12.3 (0.12.3-1+deb12u1, Lua 5.4).

Session policies (``policy`` / ``max_sessions``):

==================  ==========================================  ===========================================
policy              ejabberd                                    Prosody
==================  ==========================================  ===========================================
single_platform     ``shaper_rules: max_user_sessions: 1``:     refused (ConfigError): its core has no per-
                    a login on another resource replaces the    account session limit; the community module
                    old session, which gets ``<conflict/>``     mod_c2s_limit_sessions is not packaged
max_sessions N      ``max_user_sessions: N`` (the oldest is     refused, same reason
                    replaced with ``<conflict/>``)
unlimited           ``max_user_sessions: infinity``             stock: any number of resources online at once
None (default)      ``max_sessions`` 10: ejabberd's stock       ``unlimited`` (stock behaviour)
                    config sets max_user_sessions 10 (code
                    default infinity)
==================  ==========================================  ===========================================

On both, a second login on the SAME resource replaces the first (``<conflict/>`` to the old
stream: ejabberd ``closeold``, Prosody ``conflict_resolve = kick_old``), whatever the policy.

Auth: ``password`` on both (``password_format='plain'`` by default: stored as given, so a SASL
PLAIN login and an account creation cost no key derivation; ``'scram'`` is the servers' stock
hashed storage, which costs a PBKDF2 per registration AND per PLAIN login: ejabberd registered 500
accounts in 30 s with it against 1.9 s plain here, under load). ``jwt`` on ejabberd only
(``auth_method: jwt``, ``jwt_key`` = a JWK file ``{"kty":"oct","k":base64url(key)}``,
``jwt_jid_field``); the HS256 token with claims ``jid`` + ``exp`` is the SASL PLAIN password;
expired, badly signed and wrong-JID tokens all get ``<not-authorized/>``; ejabberd checks ``exp``
at login only. No accounts exist or are needed with JWT (``create_accounts`` returns 0).

Admin views:

- ejabberd: ``mod_http_api`` at ``http_base + '/api'``, allowed from 127.0.0.0/8 only
  (``api_permissions``): ``online_resources`` = ``/api/user_resources``, ``kick_user`` =
  ``/api/kick_user`` (client gets ``<policy-violation/>``), ``kick_session`` (``<conflict/>`` with a
  reason), ``connected_count`` = ``/api/connected_users_number``; accounts through
  ``/api/register`` from a pool of 16 keep-alive connections.
- Prosody: its admin socket (what ``prosodyctl shell`` uses), spoken directly: accounts =
  pipelined ``user:create(jid, password)``; ``online_resources`` = the keys of
  ``prosody.hosts[domain].sessions[user].sessions`` (bound resources), ``kick_user`` closes those
  sessions with ``<policy-violation/>``, ``connected_count`` = the size of ``prosody.full_sessions``.

Transports: TCP c2s always (the readiness check and the login path); WebSocket at ejabberd
``/ws`` / Prosody ``/xmpp-websocket`` on the HTTP port (``ws_url``); BOSH on request.

What the configs change from the stock ones (the load-test-breaking defaults): every listener on
127.0.0.1 only, listen backlog 4096 (stock ejabberd 5, Prosody 128), ejabberd without mod_fail2ban
(stock bans 127.0.0.1 for an hour after 20 failed logins), no c2s shaper (stock 3,000 B/s),
``starttls_required: false`` unless ``tls=True``, ``registration_timeout: infinity``; Prosody
``c2s_require_encryption = false``, ``allow_unencrypted_plain_auth = true``,
``min_seconds_between_registrations = 0``, ``limits = {}`` (mod_limits not loaded), no s2s.

Processes: the server runs in the foreground in a session of its own, as its service user via
``setpriv`` (not su/runuser: PAM would drop nofile to 1024). ejabberd gets a fixed loopback
distribution port, so no epmd is started at all (nothing outlives it, no clash with another node
on the box). ``stop()`` sends SIGTERM to the server (ejabberd: the BEAM VM), then SIGKILLs whatever
is still in that session or carries the target's ``HARNESS_TARGET_ID`` environment marker (so a
daemon that left the session, as epmd would, is found too); it never signals any other process.

Measured by hand here (Debian 12, 2 cores shared with other agents, load average 5-7 while
measuring, so an idle box is faster): start to a c2s stream answer ejabberd 2.4-3.4 s (up to 9 s at
the worst moment), Prosody 0.2-0.4 s; 10,000 accounts ejabberd 12.5 s (``/api/register``, 16
keep-alive connections; 4 were slower, 48 no faster: the server is the bottleneck), Prosody 5.6 s
(admin socket chunks); stop ejabberd ~1.2 s (clean ``init:stop`` on SIGTERM), Prosody ~0.05 s.
With ``password_format='scram'`` ejabberd needed 30 s for 500 accounts.

Logs: ``log_level`` defaults to ``warning``. At ``info`` ejabberd logs every connection and every
admin API call with its arguments (so ``/api/register`` passwords land in ``<run_dir>/ejabberd.log``);
Prosody at ``info`` logs every connection and authentication. ``EjabberdTarget.ctl("status")`` runs
ejabberdctl against the node (one short VM per call, ~1-2 s: for a look by hand only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.targets.ejabberd import EjabberdTarget
from harness.targets.prosody import ProsodyTarget
from harness.targets.xmpp_base import XMPP_POLICIES, XmppServerTarget

XMPP_TARGETS: dict[str, type[XmppServerTarget]] = {"ejabberd": EjabberdTarget, "prosody": ProsodyTarget}

__all__ = ["XMPP_POLICIES", "XMPP_TARGETS", "EjabberdTarget", "ProsodyTarget", "XmppServerTarget", "make_target"]


def make_target(kind: str, run_dir: str | Path, **options: Any) -> XmppServerTarget:
    """The target class for ``kind`` (``ejabberd`` | ``prosody``) built with ``options``."""
    try:
        cls = XMPP_TARGETS[kind]
    except KeyError:
        raise ConfigError("target.kind", f"kind must be one of {', '.join(XMPP_TARGETS)}, not {kind!r}.") from None
    return cls(run_dir, **options)
