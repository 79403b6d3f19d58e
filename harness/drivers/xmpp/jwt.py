"""HS256 JSON Web Tokens for ejabberd's ``auth_method: jwt`` (stdlib only: hmac, json, base64url).

ejabberd reads the key from a JWK file (``jwt_key``: ``{"kty": "oct", "k": base64url(key)}``)
and the JID from the claim named by ``jwt_jid_field`` (default ``jid``); the token is sent as
the SASL PLAIN password and must carry ``exp`` (unix seconds). ejabberd answers an expired,
badly signed or wrong-JID token with the same ``not-authorized`` and checks ``exp`` at login
only.

``make_token`` / ``decode_token`` / ``token_exp`` / ``looks_like_jwt`` / ``write_jwk`` are
pure (``write_jwk`` writes one file); times are unix seconds.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["JwtError", "b64url", "b64url_decode", "decode_token", "looks_like_jwt", "make_token", "token_exp",
           "write_jwk", "jwk"]

_HEADER = {"alg": "HS256", "typ": "JWT"}


class JwtError(ValueError):
    """A token that is malformed, badly signed or expired (one sentence in ``str()``)."""


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url` (padding optional); raises :class:`JwtError` on bad input."""
    if not isinstance(text, str):
        raise JwtError("base64url input must be text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("bad base64url") from None


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")


def make_token(key: bytes, jid: str, exp: int | float, *, iat: int | float | None = None,
               jid_field: str = "jid", extra: dict | None = None) -> str:
    """An HS256 token for ``jid`` expiring at ``exp`` (unix s); ``iat`` defaults to now."""
    claims: dict[str, Any] = {jid_field: jid, "exp": int(exp), "iat": int(time.time() if iat is None else iat)}
    if extra:
        claims.update(extra)
    signing_input = b64url(_json(_HEADER)) + "." + b64url(_json(claims))
    sig = hmac.digest(key, signing_input.encode("ascii"), hashlib.sha256)
    return signing_input + "." + b64url(sig)


def _split(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str):
        raise JwtError("a token must be text")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise JwtError("a token has three non-empty dot-separated parts")
    return parts[0], parts[1], parts[2]


def _claims(payload: str) -> dict:
    try:
        claims = json.loads(b64url_decode(payload))
    except (ValueError, UnicodeDecodeError):
        raise JwtError("the token's payload is not JSON") from None
    if not isinstance(claims, dict):
        raise JwtError("the token's payload is not a JSON object")
    return claims


def decode_token(token: str, key: bytes, *, now: float | None = None, verify_exp: bool = True) -> dict:
    """The claims of a valid HS256 ``token`` signed with ``key``; raises :class:`JwtError` when it is
    malformed, not HS256, badly signed, or (``verify_exp``) expired at ``now`` (unix s, default now)."""
    head, payload, sig = _split(token)
    try:
        header = json.loads(b64url_decode(head))
    except (ValueError, UnicodeDecodeError):
        raise JwtError("the token's header is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise JwtError("only HS256 tokens are supported")
    want = hmac.digest(key, f"{head}.{payload}".encode("ascii"), hashlib.sha256)
    if not hmac.compare_digest(want, b64url_decode(sig)):
        raise JwtError("the token's signature does not verify")
    claims = _claims(payload)
    if verify_exp:
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise JwtError("the token has no numeric exp claim")
        if exp <= (time.time() if now is None else now):
            raise JwtError("the token has expired")
    return claims


def looks_like_jwt(credential: object) -> bool:
    """True when ``credential`` has the JWT shape (three base64url parts, a JSON header with ``alg``).
    Cheap: a password with no two dots is rejected without decoding anything."""
    if not isinstance(credential, str) or credential.count(".") != 2 or len(credential) < 16:
        return False
    try:
        head, _payload, _sig = _split(credential)
        header = json.loads(b64url_decode(head))
    except (JwtError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def token_exp(token: object) -> int | None:
    """The ``exp`` claim (unix s) of a JWT-shaped ``token`` without checking its signature; None when
    it is not a JWT or has no numeric ``exp``."""
    if not looks_like_jwt(token):
        return None
    try:
        claims = _claims(token.split(".")[1])  # type: ignore[union-attr]
    except JwtError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return int(exp)


def jwk(key: bytes) -> dict:
    """The symmetric JWK for ``key`` (RFC 7517/7518: ``kty`` ``oct``)."""
    return {"kty": "oct", "k": b64url(key)}


def write_jwk(path: str | os.PathLike, key: bytes) -> Path:
    """Write the JWK file ejabberd's ``jwt_key`` option reads; mode 0644 so user ``ejabberd`` can read it."""
    path = Path(path)
    path.write_text(json.dumps(jwk(key)) + "\n", encoding="ascii")
    os.chmod(path, 0o644)
    return path
