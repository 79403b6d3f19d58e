"""Frames <-> messages, codes table and SDK status machine (PROTOCOL.md §2, §3, §5)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import protocol as p
from harness.protocol import (
    BadFrame,
    BadRequest,
    Event,
    Heartbeat,
    Login,
    Logout,
    Response,
    Status,
    code_label,
    code_name,
    code_short,
    encode_kicked_offline,
    encode_login,
    encode_request,
    encode_response,
    encode_user_sig_expired,
    parse_request,
    parse_server_frame,
)

GOOD_LOGIN = {
    "cmd": "login",
    "seq": 7,
    "sdkAppID": 1400000000,
    "userID": "alice_01-x",
    "userSig": "eJyr",
    "platform": "iOS",
    "instanceID": "dev-1.a:b_c",
}


def login_frame(**changes) -> str:
    obj = dict(GOOD_LOGIN)
    for key, value in changes.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj)


# ---- codes ---------------------------------------------------------------------------------


def test_code_names_labels_and_shorts():
    assert code_name(70001) == "ERR_SVR_ACCOUNT_USERSIG_EXPIRED"
    assert code_label(70001) == "70001 ERR_SVR_ACCOUNT_USERSIG_EXPIRED"
    assert code_short(70001) == "70001 USERSIG_EXPIRED"
    assert code_label(-1) == "-1 ERR_TRANSPORT"
    assert code_short(-1) == "-1 TRANSPORT"
    assert code_short(0) == "0 OK"
    assert code_name(6208) == "ERR_LOGIN_KICKED_OFF_BY_OTHER"
    assert code_name(7003) == "ERR_SDK_COMM_INVALID_IDENTIFIER"


def test_unknown_code_is_labelled_unknown():
    assert code_name(12345) == "UNKNOWN"
    assert code_label(12345) == "12345 UNKNOWN"
    assert code_short(12345) == "12345 UNKNOWN"


def test_every_code_the_protocol_uses_has_a_tencent_name():
    used = [0, -1, 6014, 6017, 6206, 6208, 7003, 7501, 60002, 60003, 60006, 60010,
            70001, 70002, 70003, 70009, 70013, 70014, 70020, 70050, 70052, 70107, 70169]
    for code in used:
        name, short = p.CODES[code]
        assert name.startswith("ERR_") and short and " " not in short


# ---- requests --------------------------------------------------------------------------------


def test_parse_login():
    assert parse_request(login_frame()) == Login(
        seq=7, sdk_app_id=1400000000, user_id="alice_01-x", user_sig="eJyr", platform="iOS", instance_id="dev-1.a:b_c"
    )


def test_parse_login_from_bytes_and_ignores_extra_keys():
    frame = login_frame(extra={"x": 1}).encode()
    assert isinstance(parse_request(frame), Login)


@pytest.mark.parametrize(("cmd", "cls"), [("logout", Logout), ("heartbeat", Heartbeat), ("status", Status)])
def test_parse_simple_requests(cmd, cls):
    assert parse_request(json.dumps({"cmd": cmd, "seq": 3})) == cls(3)
    assert parse_request(encode_request(cmd, 4)) == cls(4)
    assert cls.cmd == cmd


def test_encode_login_round_trips_through_parse_request():
    frame = encode_login(9, 1400000000, "bob", "sig", "Web", "tab-3")
    assert json.loads(frame) == {"cmd": "login", "seq": 9, "sdkAppID": 1400000000, "userID": "bob",
                                 "userSig": "sig", "platform": "Web", "instanceID": "tab-3"}
    assert parse_request(frame) == Login(9, 1400000000, "bob", "sig", "Web", "tab-3")


def test_encode_request_refuses_login_and_unknown():
    with pytest.raises(ValueError):
        encode_request("login", 1)
    with pytest.raises(ValueError):
        encode_request("dance", 1)


@pytest.mark.parametrize(
    "frame",
    ["", "not json", "[1,2]", '"login"', "42", "null", b"\xff\xfe", "{", '{"cmd":"status"}', '{"cmd":"status","seq":"1"}',
     '{"cmd":"status","seq":true}', '{"cmd":"status","seq":1.0}', '{"cmd":"status","seq":null}', "[" * 100000],
)
def test_unreadable_frames_get_6017_without_seq(frame):
    result = parse_request(frame)
    assert isinstance(result, BadRequest)
    assert (result.seq, result.code) == (None, 6017)
    assert result.desc


@pytest.mark.parametrize("cmd", ["dance", "", "LOGIN", 5, None, ["login"]])
def test_unknown_cmd_gets_6017_and_keeps_seq(cmd):
    result = parse_request(json.dumps({"cmd": cmd, "seq": 11}))
    assert result == BadRequest(11, 6017, result.desc)


def test_missing_cmd_keeps_seq():
    assert parse_request('{"seq": 5}').seq == 5


@pytest.mark.parametrize(
    "user_id",
    ["", "a" * 33, "has space", "tab\t", "ümlaut", "dot.ted", "abc\n", "new\nline", 123, None, True, ["a"], ..., "a/b"],
)
def test_bad_user_id_is_7003(user_id):
    result = parse_request(login_frame(userID=user_id))
    assert isinstance(result, BadRequest) and (result.seq, result.code) == (7, 7003)


@pytest.mark.parametrize("user_id", ["a", "A" * 32, "0", "_", "-", "Az09_-"])
def test_good_user_ids(user_id):
    assert parse_request(login_frame(userID=user_id)).user_id == user_id


@pytest.mark.parametrize("platform", ["android", "IOS", "", "Web ", "Harmony", 1, None, ...])
def test_bad_platform_is_6017(platform):
    result = parse_request(login_frame(platform=platform))
    assert isinstance(result, BadRequest) and (result.seq, result.code) == (7, 6017)
    assert "platform" in result.desc


@pytest.mark.parametrize("platform", p.PLATFORMS)
def test_every_platform_is_accepted(platform):
    assert parse_request(login_frame(platform=platform)).platform == platform


@pytest.mark.parametrize("instance", ["", "x" * 65, "a/b", "a b", "é", "a\n", 5, None, ...])
def test_bad_instance_id_is_6017(instance):
    result = parse_request(login_frame(instanceID=instance))
    assert isinstance(result, BadRequest) and (result.seq, result.code) == (7, 6017)
    assert "instanceID" in result.desc


@pytest.mark.parametrize("instance", ["x" * 64, "a", "tab-1.x:y_Z9"])
def test_good_instance_ids(instance):
    assert parse_request(login_frame(instanceID=instance)).instance_id == instance


@pytest.mark.parametrize("app", ["1400000000", True, 1.0, None, ...])
def test_bad_sdkappid_is_6017(app):
    result = parse_request(login_frame(sdkAppID=app))
    assert isinstance(result, BadRequest) and (result.seq, result.code) == (7, 6017)
    assert "sdkAppID" in result.desc


@pytest.mark.parametrize("sig", [None, 1, ["x"], ...])
def test_bad_user_sig_type_is_6017(sig):
    result = parse_request(login_frame(userSig=sig))
    assert isinstance(result, BadRequest) and (result.seq, result.code) == (7, 6017)
    assert "userSig" in result.desc


def test_empty_user_sig_passes_parsing():
    assert parse_request(login_frame(userSig="")).user_sig == ""


@pytest.mark.parametrize(
    ("changes", "code", "word"),
    [
        ({"userID": "bad id", "platform": "x", "instanceID": "", "sdkAppID": "1", "userSig": 1}, 7003, "userID"),
        ({"platform": "x", "instanceID": "", "sdkAppID": "1", "userSig": 1}, 6017, "platform"),
        ({"instanceID": "", "sdkAppID": "1", "userSig": 1}, 6017, "instanceID"),
        ({"sdkAppID": "1", "userSig": 1}, 6017, "sdkAppID"),
    ],
)
def test_login_checks_run_in_protocol_order(changes, code, word):
    result = parse_request(login_frame(**changes))
    assert isinstance(result, BadRequest) and result.code == code and word in result.desc


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
_json = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_request_or_bad_request(frame):
    assert isinstance(parse_request(frame), (Login, Logout, Heartbeat, Status, BadRequest))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_request_or_bad_request(frame):
    assert isinstance(parse_request(frame), (Login, Logout, Heartbeat, Status, BadRequest))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(GOOD_LOGIN) + ["x"]), _json, max_size=8))
def test_any_object_with_protocol_keys_is_handled(obj):
    frame = json.dumps(obj)
    result = parse_request(frame)
    if isinstance(result, BadRequest):
        assert result.code in (6017, 7003) and result.desc
        seq = obj.get("seq")
        expected_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        assert result.seq == expected_seq
    else:
        assert result.seq == obj["seq"] and result.cmd == obj["cmd"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["userID", "platform", "instanceID", "sdkAppID", "userSig"]), _json, max_size=5))
def test_any_login_field_values_are_handled(changes):
    result = parse_request(login_frame(**changes))
    if isinstance(result, Login):
        assert p.USER_ID_RE.fullmatch(result.user_id) and result.platform in p.PLATFORMS
    else:
        assert result.code in (6017, 7003) and result.seq == 7


# ---- responses and events ---------------------------------------------------------------------


def test_encode_response_is_compact_and_omits_missing_data():
    assert encode_response(3, 0) == '{"seq":3,"code":0,"desc":""}'
    assert encode_response(None, 6017, "bad") == '{"seq":null,"code":6017,"desc":"bad"}'
    assert encode_response(4, 0, "", {"serverTime": 5}) == '{"seq":4,"code":0,"desc":"","data":{"serverTime":5}}'


def test_response_round_trip():
    data = {"sessionID": "S1", "kicked": [{"sessionID": "S0", "platform": "iOS", "instanceID": "d"}]}
    assert parse_server_frame(encode_response(8, 0, "ok", data)) == Response(8, 0, "ok", data)
    assert parse_server_frame(encode_response(None, 6017, "bad")) == Response(None, 6017, "bad", None)


def test_kicked_offline_round_trip():
    by = {"sessionID": "S2", "platform": "Web", "instanceID": "t1"}
    frame = encode_kicked_offline("S1", "multi_device", by)
    assert json.loads(frame) == {"event": "kickedOffline", "sessionID": "S1", "reason": "multi_device", "by": by}
    assert parse_server_frame(frame) == Event("kickedOffline", "S1", "multi_device", by)
    assert parse_server_frame(encode_kicked_offline("S1", "rest_kick", None)) == Event("kickedOffline", "S1", "rest_kick", None)


def test_user_sig_expired_round_trip():
    frame = encode_user_sig_expired("S9")
    assert json.loads(frame) == {"event": "userSigExpired", "sessionID": "S9"}
    assert parse_server_frame(frame.encode()) == Event("userSigExpired", "S9", None, None)


def test_response_without_desc_reads_as_empty_desc():
    assert parse_server_frame('{"seq":1,"code":0}') == Response(1, 0, "", None)


@pytest.mark.parametrize(
    "frame",
    ["", "nope", "[]", "3", b"\xc3\x28", '{"seq":1}', '{"seq":1,"code":true}', '{"seq":1,"code":"0"}',
     '{"seq":"1","code":0}', '{"seq":1,"code":0,"desc":5}', '{"seq":1,"code":0,"data":[1]}',
     '{"event":"party","sessionID":"S"}', '{"event":"userSigExpired"}', '{"event":"kickedOffline","sessionID":"S"}',
     '{"event":"kickedOffline","sessionID":"S","reason":1}', '{"event":"kickedOffline","sessionID":"S","reason":"x","by":[]}',
     '{"event":null,"sessionID":"S"}', "{" * 50000],
)
def test_contract_breaking_server_frames_are_bad_frames(frame):
    result = parse_server_frame(frame)
    assert isinstance(result, BadFrame) and result.desc


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_server_frame_parses_without_raising(frame):
    assert isinstance(parse_server_frame(frame), (Response, Event, BadFrame))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["seq", "code", "desc", "data", "event", "sessionID", "reason", "by"]), _json))
def test_any_server_object_parses_without_raising(obj):
    result = parse_server_frame(json.dumps(obj))
    assert isinstance(result, (Response, Event, BadFrame))
    if isinstance(result, Event):
        assert result.name in p.EVENTS and isinstance(result.session_id, str)


# ---- SDK status machine ------------------------------------------------------------------------


def test_sdk_status_machine_follows_the_login_lifecycle():
    s = p.STATUS_LOGOUT
    s = p.next_status(s, "login_sent")
    assert s == p.STATUS_LOGINING
    assert p.next_status(s, "login_failed") == p.STATUS_LOGOUT
    s = p.next_status(s, "login_ok")
    assert s == p.STATUS_LOGINED
    for ending in ("logout", "kicked_offline", "user_sig_expired", "disconnect"):
        assert p.next_status(s, ending) == p.STATUS_LOGOUT
    assert p.next_status(s, "login_sent") == p.STATUS_LOGINING  # account switch / relogin


def test_sdk_status_ignores_happenings_that_do_not_apply():
    assert p.next_status(p.STATUS_LOGOUT, "login_ok") == p.STATUS_LOGOUT
    assert p.next_status(p.STATUS_LOGOUT, "kicked_offline") == p.STATUS_LOGOUT
    assert p.next_status(p.STATUS_LOGINED, "login_ok") == p.STATUS_LOGINED
