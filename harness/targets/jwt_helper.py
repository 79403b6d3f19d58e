"""Minimal HS256 JSON Web Tokens and JWK (``kty: oct``) keys for the ejabberd JWT target.

Private to targets and their tests: the load driver has its own token code
(``harness/drivers/xmpp/jwt.py``). Standard library only.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_for_key(key: bytes) -> dict[str, str]:
    """The symmetric key as a JWK, the form ejabberd's ``jwt_key`` file holds."""
    return {"kty": "oct", "alg": "HS256", "k": b64url(key)}


def make_hs256(claims: dict[str, Any], key: bytes) -> str:
    """A compact HS256 JWT over ``claims`` (compact JSON, keys in given order)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    sig = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def login_token(jid: str, key: bytes, *, ttl_s: float = 3600.0, field: str = "jid",
                now: float | None = None) -> str:
    """A token for ``jid`` (bare JID) that expires ``ttl_s`` seconds from ``now`` (negative = already expired)."""
    issued = time.time() if now is None else now
    return make_hs256({field: jid, "exp": int(issued + ttl_s)}, key)
