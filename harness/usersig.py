"""UserSig issue and verification, byte-compatible with Tencent's TLSSigAPIv2 (pure, no I/O).

Rules (shared PROTOCOL.md section 1):

    content  = "TLS.identifier:<userID>\\n" "TLS.sdkappid:<sdkAppID>\\n"
               "TLS.time:<time>\\n" "TLS.expire:<expire>\\n" ["TLS.userbuf:<b64 userbuf>\\n"]
    TLS.sig  = base64(HMAC-SHA256(key=secretKey as UTF-8, msg=content))
    UserSig  = b64url(zlib(JSON{"TLS.ver", "TLS.identifier", "TLS.sdkappid", "TLS.expire",
                                "TLS.time", ["TLS.userbuf",] "TLS.sig"}))
    b64url   = standard base64 with "+" -> "*", "/" -> "-", "=" -> "_"

Official encoders differ in JSON key order (Python: ver, identifier, sdkappid, expire, time;
Node: ..., time, expire), JSON spacing (Python ``", "``; Node/Go compact, Go adds a newline)
and zlib level (Go defaults to level 0, stored blocks); verification accepts all of them.

Verification runs the checks of ``VERIFY_ORDER`` in that order; the first failure wins and
raises :class:`UserSigError` with the code of that row. All times are Unix seconds.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time as _time
import zlib
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------
# Rules as data
# --------------------------------------------------------------------------------------

#: Version string written into every sig (official libraries write exactly this).
SIG_VERSION = "2.0"
#: Default lifetime of an issued sig, seconds (official default: 180 days).
DEFAULT_EXPIRE_S = 180 * 86400
#: Default clock leeway for verification, seconds.
DEFAULT_LEEWAY_S = 5
#: Longest sig string accepted, characters.
MAX_SIG_CHARS = 4096
#: Largest inflated JSON accepted, bytes (zlib-bomb guard).
MAX_INFLATED_BYTES = 16 * 1024

ERR_USERSIG_EXPIRED = 70001
ERR_USERSIG_EMPTY = 70002
ERR_USERSIG_INVALID = 70003
ERR_USERSIG_MISMATCH = 70009
ERR_IDENTIFIER_MISMATCH = 70013
ERR_SDKAPPID_MISMATCH = 70014
ERR_USERSIG_REVOKED = 70052

#: Verification order (PROTOCOL.md section 1 table): (check, code). Documentation as data;
#: :func:`verify_usersig` follows it line by line.
VERIFY_ORDER: tuple[tuple[str, int], ...] = (
    ("sig empty", ERR_USERSIG_EMPTY),
    ("too long / bad base64 / bad zlib / bad JSON / missing or mistyped field", ERR_USERSIG_INVALID),
    ("TLS.sdkappid != login sdkAppID", ERR_SDKAPPID_MISMATCH),
    ("TLS.identifier != login userID", ERR_IDENTIFIER_MISMATCH),
    ("HMAC mismatch", ERR_USERSIG_MISMATCH),
    ("now > time + expire + leeway", ERR_USERSIG_EXPIRED),
    ("time > now + leeway", ERR_USERSIG_INVALID),
    ("time <= revoked_at", ERR_USERSIG_REVOKED),
)

# b64url <-> standard base64 alphabets (TLSSigAPIv2's own variant, not RFC 4648 urlsafe).
_TO_URL = str.maketrans({"+": "*", "/": "-", "=": "_"})
_FROM_URL = str.maketrans({"*": "+", "-": "/", "_": "="})

#: JSON fields every sig must carry, with the Python type each must have (bool is never int).
_REQUIRED_FIELDS: tuple[tuple[str, type], ...] = (
    ("TLS.ver", str),
    ("TLS.identifier", str),
    ("TLS.sdkappid", int),
    ("TLS.expire", int),
    ("TLS.time", int),
    ("TLS.sig", str),
)


class UserSigError(Exception):
    """A UserSig was rejected. ``code`` is the Tencent error code, ``desc`` one sentence.

    ``str(err) == err.desc``.
    """

    def __init__(self, code: int, desc: str) -> None:
        super().__init__(desc)
        self.code = code
        self.desc = desc

    def __str__(self) -> str:
        return self.desc

    def __repr__(self) -> str:
        return f"UserSigError({self.code}, {self.desc!r})"


@dataclass(frozen=True)
class SigInfo:
    """The decoded fields of a UserSig.

    ``time`` is the issue time (Unix s), ``expire`` the lifetime (s), ``userbuf`` the raw
    userbuf bytes or None.
    """

    identifier: str
    sdk_app_id: int
    time: int
    expire: int
    userbuf: bytes | None

    @property
    def expire_at(self) -> int:
        """Unix second at which the sig stops being valid (``time + expire``, leeway excluded)."""
        return self.time + self.expire


# --------------------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """Standard base64 of ``data`` with ``+ / =`` replaced by ``* - _`` (TLSSigAPIv2 variant)."""
    return base64.b64encode(data).decode("ascii").translate(_TO_URL)


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url_encode`; raises ``ValueError`` on any character outside the
    alphabet. Missing trailing padding is tolerated (some encoders drop it)."""
    std = text.translate(_FROM_URL)
    if len(std) % 4:
        std += "=" * (-len(std) % 4)
    return base64.b64decode(std.encode("ascii"), validate=True)


def sig_content(
    identifier: str, sdk_app_id: int, time: int, expire: int, userbuf_b64: str | None = None
) -> str:
    """The exact text that TLS.sig is the HMAC of (``time`` Unix s, ``expire`` s)."""
    content = (
        f"TLS.identifier:{identifier}\n"
        f"TLS.sdkappid:{sdk_app_id}\n"
        f"TLS.time:{time}\n"
        f"TLS.expire:{expire}\n"
    )
    if userbuf_b64 is not None:
        content += f"TLS.userbuf:{userbuf_b64}\n"
    return content


def _hmac_b64(secret_key: str, content: str) -> bytes:
    digest = hmac.new(secret_key.encode("utf-8"), content.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest)


# --------------------------------------------------------------------------------------
# Issue
# --------------------------------------------------------------------------------------


def gen_usersig(
    sdk_app_id: int,
    secret_key: str,
    user_id: str,
    expire: int = DEFAULT_EXPIRE_S,
    *,
    now: int | None = None,
    userbuf: bytes | None = None,
    level: int = -1,
) -> str:
    """Issue a UserSig exactly as TLSSigAPIv2's ``genUserSig`` would.

    ``expire`` is the lifetime in seconds; ``now`` the issue time in Unix seconds (default:
    the current second); ``level`` the zlib level (-1 = zlib default, as the official libs).
    """
    issued = int(_time.time()) if now is None else int(now)
    userbuf_b64 = None if userbuf is None else base64.b64encode(userbuf).decode("ascii")
    doc: dict[str, Any] = {
        "TLS.ver": SIG_VERSION,
        "TLS.identifier": str(user_id),
        "TLS.sdkappid": int(sdk_app_id),
        "TLS.expire": int(expire),
        "TLS.time": issued,
    }
    if userbuf_b64 is not None:
        doc["TLS.userbuf"] = userbuf_b64
    content = sig_content(str(user_id), int(sdk_app_id), issued, int(expire), userbuf_b64)
    doc["TLS.sig"] = _hmac_b64(secret_key, content).decode("ascii")
    raw = json.dumps(doc).encode("utf-8")
    return b64url_encode(zlib.compress(raw, level))


# --------------------------------------------------------------------------------------
# Decode / verify
# --------------------------------------------------------------------------------------


def _invalid(desc: str) -> UserSigError:
    return UserSigError(ERR_USERSIG_INVALID, desc)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _inflate(raw: bytes) -> bytes:
    """Inflate a zlib stream, refusing output over MAX_INFLATED_BYTES, truncation or trailing data."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, MAX_INFLATED_BYTES + 1)
    except zlib.error:
        raise _invalid("UserSig is not a valid zlib stream.") from None
    if len(out) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
        raise _invalid(f"UserSig inflates to more than {MAX_INFLATED_BYTES} bytes.")
    if not inflater.eof:
        raise _invalid("UserSig zlib stream is truncated.")
    if inflater.unused_data:
        raise _invalid("UserSig has trailing data after its zlib stream.")
    return out


def _is_clean_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode(sig: str) -> tuple[SigInfo, str, str | None]:
    """Decode without checking the HMAC; returns (info, TLS.sig, TLS.userbuf as in the JSON)."""
    if not isinstance(sig, str):
        raise _invalid("UserSig must be a string.")
    if sig == "":
        raise UserSigError(ERR_USERSIG_EMPTY, "UserSig is empty.")
    if len(sig) > MAX_SIG_CHARS:
        raise _invalid(f"UserSig is longer than {MAX_SIG_CHARS} characters.")
    try:
        raw = b64url_decode(sig)
    except (binascii.Error, ValueError):
        raise _invalid("UserSig is not valid base64.") from None
    text = _inflate(raw)
    try:
        doc = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _invalid("UserSig does not hold valid JSON.") from None
    if not isinstance(doc, dict):
        raise _invalid("UserSig JSON is not an object.")
    for name, kind in _REQUIRED_FIELDS:
        value = doc.get(name)
        if value is None:
            raise _invalid(f"UserSig lacks {name}.")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _invalid(f"UserSig field {name} has the wrong type.")
        if isinstance(value, str) and not _is_clean_text(value):
            raise _invalid(f"UserSig field {name} is not valid text.")
    # TLS.ver must be a string, but its value is not checked: Tencent's official Go verifier
    # ignores it too, and sigs that the official libraries accept must be accepted here.
    userbuf_b64 = doc.get("TLS.userbuf")
    userbuf: bytes | None = None
    if userbuf_b64 is not None:
        if not isinstance(userbuf_b64, str) or not _is_clean_text(userbuf_b64):
            raise _invalid("UserSig field TLS.userbuf has the wrong type.")
        try:
            userbuf = base64.b64decode(userbuf_b64.encode("ascii"), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("UserSig field TLS.userbuf is not valid base64.") from None
    info = SigInfo(
        identifier=doc["TLS.identifier"],
        sdk_app_id=doc["TLS.sdkappid"],
        time=doc["TLS.time"],
        expire=doc["TLS.expire"],
        userbuf=userbuf,
    )
    return info, doc["TLS.sig"], userbuf_b64


def decode_usersig(sig: str) -> tuple[SigInfo, str]:
    """Decode a UserSig without checking its HMAC; returns (info, TLS.sig).

    Raises :class:`UserSigError` 70002 (empty) or 70003 (malformed). Never raises anything else.
    """
    info, mac, _ = _decode(sig)
    return info, mac


def verify_usersig(
    sig: str,
    *,
    sdk_app_id: int,
    secret_key: str,
    user_id: str,
    now: float,
    leeway: int = DEFAULT_LEEWAY_S,
    revoked_at: int | None = None,
) -> SigInfo:
    """Verify a UserSig for a login; returns its fields or raises :class:`UserSigError`.

    ``now`` is the current time (Unix s, may be fractional), ``leeway`` the clock leeway (s),
    ``revoked_at`` the Unix second of the user's last REST kick (sigs issued at or before it
    are revoked). Checks and codes follow ``VERIFY_ORDER``; the first failure wins.
    """
    info, mac, userbuf_b64 = _decode(sig)
    if info.sdk_app_id != sdk_app_id:
        raise UserSigError(ERR_SDKAPPID_MISMATCH, "UserSig sdkappid does not match the login's sdkAppID.")
    if info.identifier != user_id:
        raise UserSigError(ERR_IDENTIFIER_MISMATCH, "UserSig identifier does not match the login's userID.")
    content = sig_content(info.identifier, info.sdk_app_id, info.time, info.expire, userbuf_b64)
    if not hmac.compare_digest(_hmac_b64(secret_key, content), mac.encode("utf-8")):
        raise UserSigError(ERR_USERSIG_MISMATCH, "UserSig signature does not match (wrong secret key or altered sig).")
    if now > info.time + info.expire + leeway:
        raise UserSigError(ERR_USERSIG_EXPIRED, "UserSig has expired.")
    if info.time > now + leeway:
        raise _invalid("UserSig was issued in the future.")
    if revoked_at is not None and info.time <= revoked_at:
        raise UserSigError(ERR_USERSIG_REVOKED, "UserSig was revoked by a kick; issue a new one.")
    return info
