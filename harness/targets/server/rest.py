"""REST v4 admin API (shared PROTOCOL.md section 6), sans-IO: query + body in, JSON dict + outbox out.

Rules, in check order:

1. ``sdkappid`` missing -> 60012; not this server's -> 60006.
2. ``identifier`` not the configured admin -> 60010.
3. ``usersig`` verified for the admin (section 1 codes, revocation by REST kick included).
4. unknown ``service/command`` -> 60009.
5. body not a JSON object -> 60003; a missing/mistyped field -> 70402 (Tencent's "invalid
   parameter"); too many entries -> 70402 naming the limit.

Answers always have ``ActionStatus`` (``OK``/``FAIL``), ``ErrorCode`` and ``ErrorInfo``.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from harness.protocol import USER_ID_RE
from harness.targets.server.core import Hub, Outbox
from harness.usersig import UserSigError, verify_usersig

ERR_JSON_PARSE = 60003
ERR_INVALID_SDKAPPID = 60006
ERR_BAD_RESOURCE = 60009
ERR_NOT_ADMIN = 60010
ERR_SDKAPPID_MISSING = 60012
ERR_INVALID_PARAMETERS = 70402
ERR_ACCOUNT_NOT_FOUND = 70107

MAX_IMPORT = 100
MAX_QUERY = 500

Result = dict[str, Any]


def ok(**extra: Any) -> Result:
    """A successful answer with extra top-level fields."""
    return {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", **extra}


def fail(code: int, info: str) -> Result:
    """A failed answer (HTTP status is still 200)."""
    return {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info}


def _valid_user_id(value: Any) -> bool:
    return isinstance(value, str) and USER_ID_RE.fullmatch(value) is not None


def authenticate(hub: Hub, query: Mapping[str, str], now: float) -> Result | None:
    """None when the query string authenticates the admin, else the FAIL answer."""
    st = hub.settings
    raw_app = query.get("sdkappid")
    if not raw_app:
        return fail(ERR_SDKAPPID_MISSING, "The sdkappid query parameter is required.")
    try:
        app = int(raw_app)
    except ValueError:
        return fail(ERR_INVALID_SDKAPPID, f"sdkappid {raw_app[:32]!r} is not a number.")
    if app != st.sdkappid:
        return fail(ERR_INVALID_SDKAPPID, f"sdkappid {app} is not served by this server.")
    identifier = query.get("identifier", "")
    if identifier != st.admin:
        return fail(ERR_NOT_ADMIN, "This request requires the app admin identifier.")
    try:
        verify_usersig(query.get("usersig", ""), sdk_app_id=st.sdkappid, secret_key=st.secret_key,
                       user_id=identifier, now=now, leeway=st.leeway_s, revoked_at=hub.revoked_at(identifier))
    except UserSigError as exc:
        return fail(exc.code, exc.desc)
    return None


def _account_import(hub: Hub, body: dict[str, Any]) -> tuple[Result, Outbox]:
    user = body.get("UserID", body.get("Identifier"))
    if not _valid_user_id(user):
        return fail(ERR_INVALID_PARAMETERS, "UserID must be 1-32 characters of A-Z a-z 0-9 _ -."), []
    for key in ("Nick", "FaceUrl"):
        if key in body and not isinstance(body[key], str):
            return fail(ERR_INVALID_PARAMETERS, f"{key} must be a string."), []
    hub.import_account(user)
    return ok(), []


def _multiaccount_import(hub: Hub, body: dict[str, Any]) -> tuple[Result, Outbox]:
    items = body.get("AccountList", body.get("Accounts"))
    if not isinstance(items, list) or not items:
        return fail(ERR_INVALID_PARAMETERS, "AccountList must be a non-empty list of {\"UserID\": ...}."), []
    if len(items) > MAX_IMPORT:
        return fail(ERR_INVALID_PARAMETERS, f"AccountList holds {len(items)} accounts; at most {MAX_IMPORT}."), []
    failed: list[Any] = []
    for item in items:
        user = item.get("UserID") if isinstance(item, dict) else item
        if _valid_user_id(user):
            hub.import_account(user)
        else:
            failed.append(user if isinstance(user, str) else json.dumps(item)[:64])
    return ok(FailAccounts=failed), []


def _kick(hub: Hub, body: dict[str, Any]) -> tuple[Result, Outbox]:
    user = body.get("UserID", body.get("Identifier"))
    if not _valid_user_id(user):
        return fail(ERR_INVALID_PARAMETERS, "UserID must be 1-32 characters of A-Z a-z 0-9 _ -."), []
    return ok(), hub.kick_user(user)


def _query_online_status(hub: Hub, body: dict[str, Any]) -> tuple[Result, Outbox]:
    ids = body.get("To_Account")
    if not isinstance(ids, list) or not ids:
        return fail(ERR_INVALID_PARAMETERS, "To_Account must be a non-empty list of UserIDs."), []
    if len(ids) > MAX_QUERY:
        return fail(ERR_INVALID_PARAMETERS, f"To_Account holds {len(ids)} UserIDs; at most {MAX_QUERY}."), []
    detail = body.get("IsNeedDetail", 0)
    if detail not in (0, 1) or isinstance(detail, bool):
        return fail(ERR_INVALID_PARAMETERS, "IsNeedDetail must be 0 or 1."), []
    require_import = hub.settings.require_import
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for user in ids:
        if not _valid_user_id(user) or (require_import and not hub.is_imported(user)):
            errors.append({"To_Account": user if isinstance(user, str) else str(user)[:64],
                           "ErrorCode": ERR_ACCOUNT_NOT_FOUND})
            continue
        sessions = hub.sessions_of(user)
        state = "Online" if sessions else "Offline"
        row: dict[str, Any] = {"To_Account": user, "Status": state, "State": state}
        if detail == 1:
            row["Detail"] = [{"Platform": s.platform, "Status": "Online"} for s in sessions]
        results.append(row)
    return ok(QueryResult=results, ErrorList=errors), []


COMMANDS: dict[tuple[str, str], Callable[[Hub, dict[str, Any]], tuple[Result, Outbox]]] = {
    ("im_open_login_svc", "account_import"): _account_import,
    ("im_open_login_svc", "multiaccount_import"): _multiaccount_import,
    ("im_open_login_svc", "kick"): _kick,
    ("openim", "query_online_status"): _query_online_status,
}


def handle_rest(hub: Hub, service: str, command: str, query: Mapping[str, str], body: bytes,
                now: float) -> tuple[Result, Outbox]:
    """Answer one REST call (``now`` Unix s); returns the JSON answer and the events to push."""
    denied = authenticate(hub, query, now)
    if denied is not None:
        return denied, []
    handler = COMMANDS.get((service, command))
    if handler is None:
        return fail(ERR_BAD_RESOURCE, f"Unknown command v4/{service[:64]}/{command[:64]}."), []
    try:
        doc = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return fail(ERR_JSON_PARSE, "The request body is not valid JSON."), []
    if not isinstance(doc, dict):
        return fail(ERR_JSON_PARSE, "The request body must be a JSON object."), []
    return handler(hub, doc)
