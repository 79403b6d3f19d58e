"""Sans-IO chat login protocol: frames <-> typed messages, codes table, login policy (pure).

Shared by the client (harness/sdk/client.py), the reference server (harness/targets/server/), the
checks and the report. No sockets, no clocks, no global mutable state: every function takes
values and returns values, so it is tested with plain values (the h11 idea).

The rules, as data (shared PROTOCOL.md sections 2-5):

* ``CODES``          code -> (Tencent NAME, short label for charts).
* ``COMMANDS``       the request ``cmd`` names; every request is ``{"cmd", "seq": int, ...}``.
* ``LOGIN_FIELDS``   login fields in the order they are checked, with the code a bad value gets.
* ``POLICY_GROUPS``  policy -> groups of platforms -> which limit applies to the group.
* ``SDK_TRANSITIONS`` the simulated SDK's login status machine (LOGOUT -> LOGINING -> LOGINED).

Frames are compact JSON text. Parsers never raise on input: a bad request frame becomes a
:class:`BadRequest` carrying the code to answer with, a bad server frame a :class:`BadFrame`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Union

# --------------------------------------------------------------------------------------
# Codes (Tencent Cloud Chat names; -1 is this harness's own "transport failed")
# --------------------------------------------------------------------------------------

OK = 0
ERR_TRANSPORT = -1
ERR_SDK_NOT_LOGGED_IN = 6014
ERR_IN_PROGESS = 6015  # (sic: Tencent's spelling)
ERR_INVALID_PARAMETERS = 6017
ERR_USER_SIG_EXPIRED = 6206
ERR_LOGIN_KICKED_OFF_BY_OTHER = 6208
ERR_SDK_COMM_INVALID_IDENTIFIER = 7003
ERR_SDK_COMM_API_CALL_FREQUENCY_LIMIT = 7008
ERR_SDK_INTERFACE_NOT_SUPPORT = 7013  # the protocol/driver has no such call (e.g. status on XMPP)
ERR_SDK_ACCOUNT_LOGIN_IN_PROCESS = 7501
ERR_SDK_ACCOUNT_LOGOUT_IN_PROCESS = 7502
ERR_SDK_NET_DISCONNECT = 9508
ERR_SDK_NET_CONN_TIMEOUT = 9510
ERR_SDK_NET_WAIT_ACK_TIMEOUT = 9520
ERR_SVR_COMM_INVALID_HTTP_URL = 60002
ERR_SVR_COMM_REQ_JSON_PARSE_FAILED = 60003
ERR_SVR_COMM_INVALID_ACCOUNT = 60004
ERR_SVR_COMM_INVALID_SDKAPPID = 60006
ERR_SVR_COMM_ID_NOT_ADMIN = 60010
ERR_SVR_COMM_SDKAPPID_MISS = 60012
ERR_SVR_ACCOUNT_USERSIG_EXPIRED = 70001
ERR_SVR_ACCOUNT_USERSIG_EMPTY = 70002
ERR_SVR_ACCOUNT_USERSIG_CHECK_FAILED = 70003
ERR_SVR_ACCOUNT_USERSIG_MISMATCH_PUBLICKEY = 70009
ERR_SVR_ACCOUNT_USERSIG_MISMATCH_ID = 70013
ERR_SVR_ACCOUNT_USERSIG_MISMATCH_SDKAPPID = 70014
ERR_SVR_ACCOUNT_SDKAPPID_NOT_FOUND = 70020
ERR_SVR_ACCOUNT_FREQ_LIMIT = 70050
ERR_SVR_ACCOUNT_INVALID_USERSIG = 70052
ERR_SVR_ACCOUNT_NOT_FOUND = 70107
ERR_SVR_ACCOUNT_INTERNAL_TIMEOUT = 70169
ERR_SVR_ACCOUNT_INVALID_COUNT = 70206
ERR_SVR_ACCOUNT_INVALID_PARAMETERS = 70402
ERR_SVR_ACCOUNT_ADMIN_REQUIRED = 70403
ERR_SVR_ACCOUNT_INTERNAL_ERROR = 70500

#: Login failures that mean "get a fresh UserSig and log in again" (the SDK's relogin rule):
#: expired (6206 client side, 70001 server side) or revoked by a REST kick (70052).
FRESH_SIG_CODES: frozenset[int] = frozenset({ERR_USER_SIG_EXPIRED, ERR_SVR_ACCOUNT_USERSIG_EXPIRED,
                                             ERR_SVR_ACCOUNT_INVALID_USERSIG})

#: code -> (NAME, short label). NAME is Tencent's; the short label is for charts and tables.
CODES: dict[int, tuple[str, str]] = {
    OK: ("ERR_SUCC", "OK"),
    ERR_TRANSPORT: ("ERR_TRANSPORT", "TRANSPORT"),
    ERR_SDK_NOT_LOGGED_IN: ("ERR_SDK_NOT_LOGGED_IN", "NOT_LOGGED_IN"),
    ERR_IN_PROGESS: ("ERR_IN_PROGESS", "IN_PROGRESS"),
    ERR_INVALID_PARAMETERS: ("ERR_INVALID_PARAMETERS", "INVALID_PARAMETERS"),
    ERR_USER_SIG_EXPIRED: ("ERR_USER_SIG_EXPIRED", "USER_SIG_EXPIRED"),
    ERR_LOGIN_KICKED_OFF_BY_OTHER: ("ERR_LOGIN_KICKED_OFF_BY_OTHER", "KICKED_OFF_BY_OTHER"),
    ERR_SDK_COMM_INVALID_IDENTIFIER: ("ERR_SDK_COMM_INVALID_IDENTIFIER", "INVALID_USERID"),
    ERR_SDK_COMM_API_CALL_FREQUENCY_LIMIT: ("ERR_SDK_COMM_API_CALL_FREQUENCY_LIMIT", "API_FREQ_LIMIT"),
    ERR_SDK_INTERFACE_NOT_SUPPORT: ("ERR_SDK_INTERFACE_NOT_SUPPORT", "NOT_SUPPORTED"),
    ERR_SDK_ACCOUNT_LOGIN_IN_PROCESS: ("ERR_SDK_ACCOUNT_LOGIN_IN_PROCESS", "LOGIN_IN_PROCESS"),
    ERR_SDK_ACCOUNT_LOGOUT_IN_PROCESS: ("ERR_SDK_ACCOUNT_LOGOUT_IN_PROCESS", "LOGOUT_IN_PROCESS"),
    ERR_SDK_NET_DISCONNECT: ("ERR_SDK_NET_DISCONNECT", "NET_DISCONNECT"),
    ERR_SDK_NET_CONN_TIMEOUT: ("ERR_SDK_NET_CONN_TIMEOUT", "CONN_TIMEOUT"),
    ERR_SDK_NET_WAIT_ACK_TIMEOUT: ("ERR_SDK_NET_WAIT_ACK_TIMEOUT", "ACK_TIMEOUT"),
    ERR_SVR_COMM_INVALID_HTTP_URL: ("ERR_SVR_COMM_INVALID_HTTP_URL", "INVALID_HTTP_URL"),
    ERR_SVR_COMM_REQ_JSON_PARSE_FAILED: ("ERR_SVR_COMM_REQ_JSON_PARSE_FAILED", "JSON_PARSE_FAILED"),
    ERR_SVR_COMM_INVALID_ACCOUNT: ("ERR_SVR_COMM_INVALID_ACCOUNT", "INVALID_ACCOUNT"),
    ERR_SVR_COMM_INVALID_SDKAPPID: ("ERR_SVR_COMM_INVALID_SDKAPPID", "INVALID_SDKAPPID"),
    ERR_SVR_COMM_ID_NOT_ADMIN: ("ERR_SVR_COMM_ID_NOT_ADMIN", "ID_NOT_ADMIN"),
    ERR_SVR_COMM_SDKAPPID_MISS: ("ERR_SVR_COMM_SDKAPPID_MISS", "SDKAPPID_MISS"),
    ERR_SVR_ACCOUNT_USERSIG_EXPIRED: ("ERR_SVR_ACCOUNT_USERSIG_EXPIRED", "USERSIG_EXPIRED"),
    ERR_SVR_ACCOUNT_USERSIG_EMPTY: ("ERR_SVR_ACCOUNT_USERSIG_EMPTY", "USERSIG_EMPTY"),
    ERR_SVR_ACCOUNT_USERSIG_CHECK_FAILED: ("ERR_SVR_ACCOUNT_USERSIG_CHECK_FAILED", "USERSIG_CHECK_FAILED"),
    ERR_SVR_ACCOUNT_USERSIG_MISMATCH_PUBLICKEY: ("ERR_SVR_ACCOUNT_USERSIG_MISMATCH_PUBLICKEY", "USERSIG_BAD_KEY"),
    ERR_SVR_ACCOUNT_USERSIG_MISMATCH_ID: ("ERR_SVR_ACCOUNT_USERSIG_MISMATCH_ID", "USERSIG_MISMATCH_ID"),
    ERR_SVR_ACCOUNT_USERSIG_MISMATCH_SDKAPPID: (
        "ERR_SVR_ACCOUNT_USERSIG_MISMATCH_SDKAPPID",
        "USERSIG_MISMATCH_SDKAPPID",
    ),
    ERR_SVR_ACCOUNT_SDKAPPID_NOT_FOUND: ("ERR_SVR_ACCOUNT_SDKAPPID_NOT_FOUND", "SDKAPPID_NOT_FOUND"),
    ERR_SVR_ACCOUNT_FREQ_LIMIT: ("ERR_SVR_ACCOUNT_FREQ_LIMIT", "LOGIN_FREQ_LIMIT"),
    ERR_SVR_ACCOUNT_INVALID_USERSIG: ("ERR_SVR_ACCOUNT_INVALID_USERSIG", "USERSIG_REVOKED"),
    ERR_SVR_ACCOUNT_NOT_FOUND: ("ERR_SVR_ACCOUNT_NOT_FOUND", "ACCOUNT_NOT_FOUND"),
    ERR_SVR_ACCOUNT_INTERNAL_TIMEOUT: ("ERR_SVR_ACCOUNT_INTERNAL_TIMEOUT", "INTERNAL_TIMEOUT"),
    ERR_SVR_ACCOUNT_INVALID_COUNT: ("ERR_SVR_ACCOUNT_INVALID_COUNT", "INVALID_COUNT"),
    ERR_SVR_ACCOUNT_INVALID_PARAMETERS: ("ERR_SVR_ACCOUNT_INVALID_PARAMETERS", "ACCOUNT_INVALID_PARAMETERS"),
    ERR_SVR_ACCOUNT_ADMIN_REQUIRED: ("ERR_SVR_ACCOUNT_ADMIN_REQUIRED", "ADMIN_REQUIRED"),
    ERR_SVR_ACCOUNT_INTERNAL_ERROR: ("ERR_SVR_ACCOUNT_INTERNAL_ERROR", "INTERNAL_ERROR"),
}

UNKNOWN_CODE_NAME = "UNKNOWN"


def code_name(code: int) -> str:
    """Tencent's name for ``code`` (``"ERR_SVR_ACCOUNT_USERSIG_EXPIRED"``); ``"UNKNOWN"`` if unknown."""
    entry = CODES.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    return entry[0] if entry else UNKNOWN_CODE_NAME


def code_label(code: int) -> str:
    """``"<code> <NAME>"``, e.g. ``"70001 ERR_SVR_ACCOUNT_USERSIG_EXPIRED"`` (journal ``detail``)."""
    return f"{code} {code_name(code)}"


def code_short(code: int) -> str:
    """``"<code> <short>"``, e.g. ``"70001 USERSIG_EXPIRED"`` (chart labels)."""
    entry = CODES.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    return f"{code} {entry[1] if entry else UNKNOWN_CODE_NAME}"


# --------------------------------------------------------------------------------------
# Platforms, statuses, events, reasons
# --------------------------------------------------------------------------------------

PLATFORMS: tuple[str, ...] = ("Android", "iOS", "iPad", "Windows", "Mac", "Linux", "Web")
NATIVE_PLATFORMS: tuple[str, ...] = ("Android", "iOS", "iPad", "Windows", "Mac", "Linux")
MOBILE_PLATFORMS: tuple[str, ...] = ("Android", "iOS", "iPad")
DESKTOP_PLATFORMS: tuple[str, ...] = ("Windows", "Mac", "Linux")
WEB_PLATFORM = "Web"

#: V2TIMManager.getLoginStatus values.
STATUS_LOGINED, STATUS_LOGINING, STATUS_LOGOUT = 1, 2, 3

EVENT_KICKED_OFFLINE = "kickedOffline"
EVENT_USER_SIG_EXPIRED = "userSigExpired"
EVENTS: tuple[str, ...] = (EVENT_KICKED_OFFLINE, EVENT_USER_SIG_EXPIRED)

#: ``reason`` of a kickedOffline event.
KICK_REASONS: tuple[str, ...] = ("multi_device", "same_instance", "rest_kick")
#: ``reason`` of a ledger "end" row (every way a session can end).
END_REASONS: tuple[str, ...] = (
    "logout", "switch", "relogin", "multi_device", "same_instance", "rest_kick", "sig_expired", "disconnect",
)

# --------------------------------------------------------------------------------------
# Requests: rules as data
# --------------------------------------------------------------------------------------

CMD_LOGIN, CMD_LOGOUT, CMD_HEARTBEAT, CMD_STATUS = "login", "logout", "heartbeat", "status"
COMMANDS: tuple[str, ...] = (CMD_LOGIN, CMD_LOGOUT, CMD_HEARTBEAT, CMD_STATUS)

USER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_user_id(value: object) -> bool:
    return isinstance(value, str) and USER_ID_RE.fullmatch(value) is not None


def _valid_instance_id(value: object) -> bool:
    return isinstance(value, str) and INSTANCE_ID_RE.fullmatch(value) is not None


#: Login fields in check order (PROTOCOL.md section 3): (wire key, attribute, test, code, desc).
LOGIN_FIELDS: tuple[tuple[str, str, Any, int, str], ...] = (
    ("userID", "user_id", _valid_user_id, ERR_SDK_COMM_INVALID_IDENTIFIER,
     "userID must be 1-32 characters of A-Z a-z 0-9 _ -."),
    ("platform", "platform", lambda v: isinstance(v, str) and v in PLATFORMS, ERR_INVALID_PARAMETERS,
     "platform must be one of " + ", ".join(PLATFORMS) + "."),
    ("instanceID", "instance_id", _valid_instance_id, ERR_INVALID_PARAMETERS,
     "instanceID must be 1-64 characters of A-Z a-z 0-9 _ . : -."),
    ("sdkAppID", "sdk_app_id", _is_int, ERR_INVALID_PARAMETERS, "sdkAppID must be an integer."),
    ("userSig", "user_sig", lambda v: isinstance(v, str), ERR_INVALID_PARAMETERS, "userSig must be a string."),
)


@dataclass(frozen=True)
class Login:
    """A login request (client -> server)."""

    cmd: ClassVar[str] = CMD_LOGIN
    seq: int
    sdk_app_id: int
    user_id: str
    user_sig: str
    platform: str
    instance_id: str


@dataclass(frozen=True)
class Logout:
    """A logout request."""

    cmd: ClassVar[str] = CMD_LOGOUT
    seq: int


@dataclass(frozen=True)
class Heartbeat:
    """A heartbeat request (answered with the server time in ms)."""

    cmd: ClassVar[str] = CMD_HEARTBEAT
    seq: int


@dataclass(frozen=True)
class Status:
    """A status request (the server's view of this connection)."""

    cmd: ClassVar[str] = CMD_STATUS
    seq: int


Request = Union[Login, Logout, Heartbeat, Status]

_SIMPLE_REQUESTS: dict[str, type[Logout] | type[Heartbeat] | type[Status]] = {
    CMD_LOGOUT: Logout,
    CMD_HEARTBEAT: Heartbeat,
    CMD_STATUS: Status,
}


@dataclass(frozen=True)
class BadRequest:
    """A request frame the server must refuse: answer ``encode_response(seq, code, desc)``."""

    seq: int | None
    code: int
    desc: str


def _load_object(frame: str | bytes) -> dict[str, Any] | str:
    """JSON object of a text frame, or a one-sentence reason it is not one."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        try:
            frame = bytes(frame).decode("utf-8")
        except UnicodeDecodeError:
            return "Frame is not valid UTF-8."
    if not isinstance(frame, str):
        return "Frame is not text."
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        return "Frame is not valid JSON."
    if not isinstance(obj, dict):
        return "Frame is not a JSON object."
    return obj


def parse_request(frame: str | bytes) -> Request | BadRequest:
    """Parse one client frame. Never raises: a bad frame gives a :class:`BadRequest`.

    Not a JSON object, no int ``seq``, unknown ``cmd`` or a mistyped field -> 6017; a bad
    ``userID`` -> 7003. Login fields are checked in ``LOGIN_FIELDS`` order; ``seq`` is kept
    whenever it was an int.
    """
    obj = _load_object(frame)
    if isinstance(obj, str):
        return BadRequest(None, ERR_INVALID_PARAMETERS, obj)
    seq = obj.get("seq")
    if not _is_int(seq):
        return BadRequest(None, ERR_INVALID_PARAMETERS, "seq must be an integer.")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        return BadRequest(seq, ERR_INVALID_PARAMETERS, "cmd must be one of " + ", ".join(COMMANDS) + ".")
    simple = _SIMPLE_REQUESTS.get(cmd)
    if simple is not None:
        return simple(seq)
    values: dict[str, Any] = {}
    for key, attr, test, code, desc in LOGIN_FIELDS:
        value = obj.get(key)
        if not test(value):
            return BadRequest(seq, code, desc)
        values[attr] = value
    return Login(seq=seq, **values)


# --------------------------------------------------------------------------------------
# Encoding (both sides)
# --------------------------------------------------------------------------------------


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def encode_response(seq: int | None, code: int, desc: str = "", data: dict | None = None) -> str:
    """A response frame ``{"seq","code","desc"[,"data"]}`` as compact JSON (``data`` omitted if None)."""
    obj: dict[str, Any] = {"seq": seq, "code": code, "desc": desc}
    if data is not None:
        obj["data"] = data
    return _dumps(obj)


def encode_kicked_offline(session_id: str, reason: str, by: dict | None) -> str:
    """A ``kickedOffline`` event; ``by`` is ``{"sessionID","platform","instanceID"}`` of the evictor or None."""
    return _dumps({"event": EVENT_KICKED_OFFLINE, "sessionID": session_id, "reason": reason, "by": by})


def encode_user_sig_expired(session_id: str) -> str:
    """A ``userSigExpired`` event for ``session_id``."""
    return _dumps({"event": EVENT_USER_SIG_EXPIRED, "sessionID": session_id})


def encode_login(seq: int, sdk_app_id: int, user_id: str, user_sig: str, platform: str, instance_id: str) -> str:
    """A login request frame (client side); values are sent as given, unchecked."""
    return _dumps({
        "cmd": CMD_LOGIN,
        "seq": seq,
        "sdkAppID": sdk_app_id,
        "userID": user_id,
        "userSig": user_sig,
        "platform": platform,
        "instanceID": instance_id,
    })


def encode_request(cmd: str, seq: int) -> str:
    """A ``logout`` / ``heartbeat`` / ``status`` request frame. Raises ValueError for another cmd."""
    if cmd not in _SIMPLE_REQUESTS:
        raise ValueError(f"encode_request takes logout, heartbeat or status, not {cmd!r}; use encode_login for login.")
    return _dumps({"cmd": cmd, "seq": seq})


# --------------------------------------------------------------------------------------
# Server frames (client side)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """A response to the request with the same ``seq`` (None when the server could not read one)."""

    seq: int | None
    code: int
    desc: str
    data: dict | None


@dataclass(frozen=True)
class Event:
    """A server push: ``name`` is ``"kickedOffline"`` or ``"userSigExpired"``.

    ``reason`` and ``by`` are set for kickedOffline (``by`` may be None, e.g. for rest_kick).
    """

    name: str
    session_id: str
    reason: str | None
    by: dict | None


@dataclass(frozen=True)
class BadFrame:
    """A server frame that breaks the contract; ``desc`` says how."""

    desc: str


def parse_server_frame(frame: str | bytes) -> Response | Event | BadFrame:
    """Parse one server frame into a Response, an Event or a BadFrame. Never raises."""
    obj = _load_object(frame)
    if isinstance(obj, str):
        return BadFrame(obj)
    if "event" in obj:
        name = obj.get("event")
        if not isinstance(name, str) or name not in EVENTS:
            return BadFrame("Unknown event " + _short_repr(name) + ".")
        session_id = obj.get("sessionID")
        if not isinstance(session_id, str):
            return BadFrame(f"{name} event lacks a string sessionID.")
        reason = obj.get("reason")
        if reason is not None and not isinstance(reason, str):
            return BadFrame(f"{name} event has a non-string reason.")
        by = obj.get("by")
        if by is not None and not isinstance(by, dict):
            return BadFrame(f"{name} event has a non-object 'by'.")
        if name == EVENT_KICKED_OFFLINE and reason is None:
            return BadFrame("kickedOffline event lacks a reason.")
        return Event(name=name, session_id=session_id, reason=reason, by=by)
    seq = obj.get("seq")
    if seq is not None and not _is_int(seq):
        return BadFrame("Response seq is neither an integer nor null.")
    code = obj.get("code")
    if not _is_int(code):
        return BadFrame("Response lacks an integer code.")
    desc = obj.get("desc", "")
    if desc is None:
        desc = ""
    if not isinstance(desc, str):
        return BadFrame("Response desc is not a string.")
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        return BadFrame("Response data is not an object.")
    return Response(seq=seq, code=code, desc=desc, data=data)


def _short_repr(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------
# SDK login status machine (client side): (status, happening) -> new status
# --------------------------------------------------------------------------------------

#: What can happen to a simulated SDK instance, and the status it leads to from each status.
#: A (status, happening) pair not in the table leaves the status unchanged.
SDK_TRANSITIONS: dict[tuple[int, str], int] = {
    (STATUS_LOGOUT, "login_sent"): STATUS_LOGINING,
    (STATUS_LOGINED, "login_sent"): STATUS_LOGINING,  # relogin / account switch
    (STATUS_LOGINING, "login_ok"): STATUS_LOGINED,
    (STATUS_LOGINING, "login_failed"): STATUS_LOGOUT,
    (STATUS_LOGINED, "logout"): STATUS_LOGOUT,
    (STATUS_LOGINING, "logout"): STATUS_LOGOUT,
    (STATUS_LOGINED, "kicked_offline"): STATUS_LOGOUT,
    (STATUS_LOGINED, "user_sig_expired"): STATUS_LOGOUT,
    (STATUS_LOGINED, "disconnect"): STATUS_LOGOUT,
    (STATUS_LOGINING, "disconnect"): STATUS_LOGOUT,
}
SDK_HAPPENINGS: tuple[str, ...] = (
    "login_sent", "login_ok", "login_failed", "logout", "kicked_offline", "user_sig_expired", "disconnect",
)


def next_status(status: int, happening: str) -> int:
    """The SDK login status after ``happening`` (one of ``SDK_HAPPENINGS``) in ``status``."""
    return SDK_TRANSITIONS.get((status, happening), status)


# --------------------------------------------------------------------------------------
# Multi-client login policy (PROTOCOL.md section 4)
# --------------------------------------------------------------------------------------

LIMIT_ONE, LIMIT_NATIVE, LIMIT_WEB, LIMIT_MAX, LIMIT_INSTANCE = "one", "native", "web", "max", "instance"

#: policy -> groups: (group name, platforms in it, which limit applies). Every platform is in
#: exactly one group of every policy. ``LIMIT_MAX`` is the ``max_sessions`` setting.
#: ``LIMIT_INSTANCE`` (policy ``unlimited``) groups sessions by instanceID, not by platform:
#: every instanceID of a user is a group of its own with limit 1 (that is same-instance
#: replacement), and nothing limits the sessions of different instances.
POLICY_GROUPS: dict[str, tuple[tuple[str, tuple[str, ...], str], ...]] = {
    "single_platform": (
        ("all", PLATFORMS, LIMIT_ONE),
    ),
    "dual_platform": (
        ("native", NATIVE_PLATFORMS, LIMIT_ONE),
        ("web", (WEB_PLATFORM,), LIMIT_WEB),
    ),
    "triple_platform": (
        ("mobile", MOBILE_PLATFORMS, LIMIT_ONE),
        ("desktop", DESKTOP_PLATFORMS, LIMIT_ONE),
        ("web", (WEB_PLATFORM,), LIMIT_WEB),
    ),
    "multi_platform": tuple((p, (p,), LIMIT_NATIVE) for p in NATIVE_PLATFORMS)
    + ((WEB_PLATFORM, (WEB_PLATFORM,), LIMIT_WEB),),
    "max_sessions": (
        ("all", PLATFORMS, LIMIT_MAX),
    ),
    "unlimited": (
        ("instance", PLATFORMS, LIMIT_INSTANCE),
    ),
}
POLICIES: tuple[str, ...] = ("single_platform", "dual_platform", "triple_platform", "multi_platform",
                             "max_sessions", "unlimited")

#: Allowed ranges (inclusive) of the instance settings.
NATIVE_INSTANCES_RANGE = (1, 3)
WEB_INSTANCES_RANGE = (1, 10)
MAX_SESSIONS_RANGE = (1, 100)
MAX_SESSIONS_DEFAULT = 10


def validate_policy(policy: str, native_instances: int = 1, web_instances: int = 1,
                    max_sessions: int = MAX_SESSIONS_DEFAULT) -> str | None:
    """None when the policy settings are valid, else one sentence saying what is wrong."""
    if not isinstance(policy, str) or policy not in POLICY_GROUPS:
        return f"policy must be one of {', '.join(POLICIES)}, not {_short_repr(policy)}."
    for name, value, (low, high) in (
        ("native_instances", native_instances, NATIVE_INSTANCES_RANGE),
        ("web_instances", web_instances, WEB_INSTANCES_RANGE),
        ("max_sessions", max_sessions, MAX_SESSIONS_RANGE),
    ):
        if not _is_int(value) or not low <= value <= high:
            return f"{name} must be an integer from {low} to {high}, not {_short_repr(value)}."
    return None


def _group_entry(policy: str, platform: str) -> tuple[str, tuple[str, ...], str]:
    groups = POLICY_GROUPS.get(policy)
    if groups is None:
        raise ValueError(f"Unknown policy {policy!r}; expected one of {', '.join(POLICIES)}.")
    for entry in groups:
        if platform in entry[1]:
            return entry
    raise ValueError(f"Unknown platform {platform!r}; expected one of {', '.join(PLATFORMS)}.")


def groups_by_instance(policy: str) -> bool:
    """True when ``policy`` groups sessions by instanceID (``unlimited``), not by platform.
    Raises ValueError for an unknown policy."""
    groups = POLICY_GROUPS.get(policy)
    if groups is None:
        raise ValueError(f"Unknown policy {policy!r}; expected one of {', '.join(POLICIES)}.")
    return any(kind == LIMIT_INSTANCE for _name, _platforms, kind in groups)


def policy_group(policy: str, platform: str, instance_id: str | None = None) -> str:
    """The name of the group a session on ``platform`` (with ``instance_id``) belongs to under ``policy``.

    Names: ``"all"``, ``"native"``, ``"mobile"``, ``"desktop"``, ``"web"``, the platform
    itself under multi_platform, or ``"instance:<instanceID>"`` under unlimited (which needs
    ``instance_id``; the other policies ignore it). Raises ValueError for an unknown policy or
    platform, or an unlimited group asked for without an instance_id.
    """
    name, _platforms, kind = _group_entry(policy, platform)
    if kind == LIMIT_INSTANCE:
        if not isinstance(instance_id, str) or not instance_id:
            raise ValueError(f"Policy {policy!r} groups sessions by instanceID; pass the session's instance_id.")
        return f"{name}:{instance_id}"
    return name


def group_limit(policy: str, platform: str, native_instances: int = 1, web_instances: int = 1,
                max_sessions: int = MAX_SESSIONS_DEFAULT) -> int:
    """How many sessions of one user may live at once in ``platform``'s group under ``policy``
    (under unlimited: in one instanceID's group, i.e. 1)."""
    kind = _group_entry(policy, platform)[2]
    if kind == LIMIT_NATIVE:
        return max(1, native_instances)
    if kind == LIMIT_WEB:
        return max(1, web_instances)
    if kind == LIMIT_MAX:
        return max(1, max_sessions)
    return 1


@dataclass(frozen=True)
class LiveSession:
    """A live login session of one user; ``order`` is the server's login order (monotonic)."""

    session_id: str
    platform: str
    instance_id: str
    order: int


def plan_login(
    policy: str,
    live: Sequence[LiveSession],
    new: LiveSession,
    native_instances: int = 1,
    web_instances: int = 1,
    max_sessions: int = MAX_SESSIONS_DEFAULT,
) -> list[tuple[LiveSession, str]]:
    """The sessions of this user that the login ``new`` ends, with the reason, in eviction order.

    ``live`` are the user's other live sessions. First every live session with ``new``'s
    instance_id ("same_instance"); then, within ``new``'s group, the oldest (by ``order``)
    beyond the group limit counting ``new`` ("multi_device"). ``new`` itself is never ended.
    Under ``unlimited`` the group is ``new``'s instanceID, so only same_instance ever ends a
    session; under ``max_sessions`` all platforms share one group of ``max_sessions``.
    Raises ValueError for an unknown policy or platform of ``new``.
    """
    group = policy_group(policy, new.platform, new.instance_id)
    limit = group_limit(policy, new.platform, native_instances, web_instances, max_sessions)
    others = [s for s in live if s.session_id != new.session_id]
    plan: list[tuple[LiveSession, str]] = [
        (s, "same_instance") for s in sorted(others, key=lambda s: s.order) if s.instance_id == new.instance_id
    ]
    replaced = {s.session_id for s, _ in plan}
    same_group = sorted(
        (
            s for s in others
            if s.session_id not in replaced and s.platform in PLATFORMS
            and policy_group(policy, s.platform, s.instance_id) == group
        ),
        key=lambda s: s.order,
    )
    excess = len(same_group) + 1 - limit
    plan.extend((s, "multi_device") for s in same_group[: max(0, excess)])
    return plan
