"""Where UserSigs come from (``usersig:`` in config) and the REST v4 admin client.

* ``LocalSigSource`` signs with sdkAppID + secret key (TLSSigAPIv2), no I/O. Asked with
  ``fresh=False`` it reuses the sig it issued last for the same (account, lifetime) while most
  of that sig's lifetime remains (as an app caches the UserSig its business server gave it).
* ``HttpSigSource`` asks the app's business server (a URL template); each fetch is the
  journaled op ``usersig_fetch``.
* ``RestAdmin`` calls PROTOCOL.md §6 with the admin's own UserSig.

All network calls use urllib (gevent-patched under Locust) with timeouts.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Mapping

from harness.usersig import gen_usersig


class SigFetchError(Exception):
    """A UserSig could not be fetched; ``code`` is the HTTP status or -1 (transport)."""

    def __init__(self, code: int, desc: str) -> None:
        super().__init__(desc)
        self.code = code
        self.desc = desc


class LocalSigSource:
    """Signs locally; ``journaled`` is False (no network op to record).

    Sig cache (``get(..., fresh=False)``): one entry per account, the sig issued last (by any
    ``get``); it is handed out again for the same ``expire`` while the time since its issue is
    below ``reuse_fraction`` of its lifetime (default 0.5: more than half of it remains). At
    most ``max_cached`` accounts are remembered (the oldest entry goes first). ``clock`` gives
    unix seconds (injectable for tests).
    """

    journaled = False
    #: what a deliberately stale sig must get: the server's ERR_SVR_ACCOUNT_USERSIG_EXPIRED
    stale_code = 70001

    def __init__(self, sdk_app_id: int, secret_key: str, *, reuse_fraction: float = 0.5,
                 max_cached: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if not 0.0 <= reuse_fraction < 1.0:
            raise ValueError(f"reuse_fraction must be in [0, 1), got {reuse_fraction!r}")
        self.sdk_app_id = sdk_app_id
        self._key = secret_key
        self.reuse_fraction = reuse_fraction
        self.max_cached = max(0, int(max_cached))
        self._clock = clock
        self._cache: dict[str, tuple[int, int, str]] = {}  # user -> (expire s, issued unix s, sig)

    def __repr__(self) -> str:  # never show the key
        return f"LocalSigSource(sdk_app_id={self.sdk_app_id}, secret_key=***)"

    def get(self, user_id: str, expire: int, *, fresh: bool = True) -> str:
        """A UserSig for ``user_id`` with lifetime ``expire`` seconds.

        ``fresh=True`` (default): issued now. ``fresh=False``: the cached one when it has the same
        lifetime and was issued less than ``reuse_fraction * expire`` seconds ago, else a new one.
        Paths that must not reuse a sig (relogin after an expiry, a revoked sig) keep the default.
        """
        expire = int(expire)
        now = self._clock()
        if not fresh:
            hit = self._cache.get(user_id)
            if hit is not None and hit[0] == expire and 0 <= now - hit[1] < expire * self.reuse_fraction:
                return hit[2]
        issued = int(now)
        sig = gen_usersig(self.sdk_app_id, self._key, user_id, expire, now=issued)
        if self.max_cached:
            cache = self._cache
            if user_id not in cache and len(cache) >= self.max_cached:
                del cache[next(iter(cache))]
            cache[user_id] = (expire, issued, sig)
        return sig

    def stale(self, user_id: str, lifetime: int, *, ago_s: int = 30) -> str:
        """A UserSig of ``lifetime`` s that expired ``ago_s`` s ago (a stale-login probe; not cached)."""
        issued = int(self._clock()) - int(lifetime) - int(ago_s)
        return gen_usersig(self.sdk_app_id, self._key, user_id, int(lifetime), now=issued)

    def forget(self, user_id: str) -> None:
        """Drop the cached sig of ``user_id`` (the server refused it: expired or revoked)."""
        self._cache.pop(user_id, None)


class PasswordSource:
    """XMPP accounts with passwords: every account's password is derived from a per-run secret
    (HMAC-SHA256(secret, user), 24 hex chars) or is one fixed ``password`` (an external server's
    test accounts). Passwords do not expire: ``expire`` is ignored. Never shows the secret."""

    journaled = False
    expiring = False

    def __init__(self, secret: str, *, password: str = "") -> None:
        self._secret = secret.encode("utf-8")
        self._fixed = password

    def __repr__(self) -> str:
        return "PasswordSource(***)"

    def get(self, user_id: str, expire: int = 0, *, fresh: bool = True) -> str:
        if self._fixed:
            return self._fixed
        return hmac.new(self._secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:24]

    def forget(self, user_id: str) -> None:
        """Nothing to forget: a password is the same every time."""


class JwtSource:
    """Expiring tickets for ejabberd's ``auth_method: jwt``: an HS256 token whose ``jid_field``
    claim is ``user@domain`` and whose ``exp`` is ``expire`` seconds from now (the UserSig's
    lifetime). ``stale(user, lifetime)`` makes one that expired ``lifetime`` s ago."""

    journaled = False
    expiring = True
    #: a stale token never reaches the server: the SDK (driver) refuses it, ERR_USER_SIG_EXPIRED
    stale_code = 6206

    def __init__(self, key: bytes, domain: str, *, jid_field: str = "jid", clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.domain = domain
        self.jid_field = jid_field
        self._clock = clock

    def __repr__(self) -> str:
        return f"JwtSource(domain={self.domain!r}, key=***)"

    def get(self, user_id: str, expire: int, *, fresh: bool = True) -> str:
        from harness.drivers.xmpp.jwt import make_token

        now = self._clock()
        return make_token(self._key, f"{user_id}@{self.domain}", now + int(expire), iat=now, jid_field=self.jid_field)

    def stale(self, user_id: str, lifetime: int, *, ago_s: int = 30) -> str:
        from harness.drivers.xmpp.jwt import make_token

        now = self._clock()
        issued = now - lifetime - ago_s
        return make_token(self._key, f"{user_id}@{self.domain}", issued + lifetime, iat=issued,
                          jid_field=self.jid_field)

    def forget(self, user_id: str) -> None:
        """Nothing cached: every get() signs a new token."""


class HttpSigSource:
    """Fetches sigs from a business server: GET/POST a URL template, JSON path to the sig."""

    journaled = True

    def __init__(self, url_template: str, *, method: str = "GET", json_path: str = "userSig",
                 timeout: float = 5.0) -> None:
        self.url_template = url_template
        self.method = method
        self.json_path = [p for p in json_path.split(".") if p]
        self.timeout = timeout

    def get(self, user_id: str, expire: int, *, fresh: bool = True) -> str:
        """Fetch a UserSig for ``user_id`` (lifetime ``expire`` s). Every call fetches: each fetch
        is a journaled ``usersig_fetch`` op, so ``fresh`` is accepted and ignored. Raises
        :class:`SigFetchError`."""
        url = self.url_template.replace("{userID}", urllib.parse.quote(user_id)).replace("{expire}", str(int(expire)))
        data = None
        headers = {}
        if self.method == "POST":
            data = json.dumps({"userID": user_id, "expire": int(expire)}).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=self.method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read(1 << 20)
        except urllib.error.HTTPError as exc:
            raise SigFetchError(exc.code, f"HTTP {exc.code} from the UserSig source") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SigFetchError(-1, f"UserSig source unreachable: {reason}") from None
        try:
            node: Any = json.loads(body)
            for part in self.json_path:
                node = node[int(part)] if isinstance(node, list) else node[part]
        except (ValueError, KeyError, IndexError, TypeError):
            raise SigFetchError(-1, f"UserSig source answer has no {'.'.join(self.json_path)!r}") from None
        if not isinstance(node, str) or not node:
            raise SigFetchError(-1, "UserSig source answered an empty or non-string sig")
        return node


class RestAdmin:
    """PROTOCOL.md §6 client. ``call`` returns ``(error_code, body)``; -1 on transport errors."""

    def __init__(self, base_url: str, sdk_app_id: int, admin: str, sig_source: LocalSigSource | None,
                 *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.sdk_app_id = sdk_app_id
        self.admin = admin
        self.sig_source = sig_source
        self.timeout = timeout
        self._sig: str | None = None

    @property
    def available(self) -> bool:
        return self.sig_source is not None and bool(self.base_url)

    def call(self, service: str, command: str, body: Mapping[str, Any]) -> tuple[int, dict]:
        if self.sig_source is None:
            return -1, {"ErrorInfo": "no admin UserSig (secret key unknown)"}
        if self._sig is None:
            self._sig = self.sig_source.get(self.admin, 86400)
        q = urllib.parse.urlencode({"sdkappid": self.sdk_app_id, "identifier": self.admin, "usersig": self._sig,
                                    "random": random.getrandbits(31), "contenttype": "json"})
        url = f"{self.base_url}/v4/{service}/{command}?{q}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                out = json.loads(resp.read(4 << 20))
        except urllib.error.HTTPError as exc:
            return -1, {"ErrorInfo": f"HTTP {exc.code}"}
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return -1, {"ErrorInfo": f"REST unreachable: {getattr(exc, 'reason', exc)}"}
        if not isinstance(out, dict):
            return -1, {"ErrorInfo": "REST answer is not a JSON object"}
        code = out.get("ErrorCode", -1)
        return (code if isinstance(code, int) else -1), out

    def query_online(self, user_ids: list[str], detail: bool = True) -> tuple[int, dict]:
        return self.call("openim", "query_online_status", {"To_Account": list(user_ids), "IsNeedDetail": int(detail)})

    def kick(self, user_id: str) -> tuple[int, dict]:
        return self.call("im_open_login_svc", "kick", {"UserID": user_id})
