"""UserSig issue/verify: byte compatibility with TLSSigAPIv2 and every failure code (PROTOCOL.md §1).

Expected sigs are built here by hand from the published algorithm, not with harness code.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.usersig import (
    MAX_INFLATED_BYTES,
    MAX_SIG_CHARS,
    SigInfo,
    UserSigError,
    decode_usersig,
    gen_usersig,
    verify_usersig,
)

APP = 1400000000
KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
USER = "xiaojun"
T0 = 1700000000
DAY = 86400


# ---- independent reference implementation of the published algorithm --------------------


def ref_mac(key: str, user: str, app: int, t: int, expire: int, userbuf_b64: str | None = None) -> str:
    content = f"TLS.identifier:{user}\nTLS.sdkappid:{app}\nTLS.time:{t}\nTLS.expire:{expire}\n"
    if userbuf_b64 is not None:
        content += f"TLS.userbuf:{userbuf_b64}\n"
    return base64.b64encode(hmac.new(key.encode(), content.encode(), hashlib.sha256).digest()).decode()


def url_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().replace("+", "*").replace("/", "-").replace("=", "_")


def pack(doc_text: str, level: int = -1) -> str:
    return url_b64(zlib.compress(doc_text.encode(), level))


def official_python_doc(user=USER, app=APP, t=T0, expire=DAY, key=KEY, userbuf: bytes | None = None) -> dict:
    """The dict tls-sig-api-v2-python builds, in its key order."""
    doc = {"TLS.ver": "2.0", "TLS.identifier": user, "TLS.sdkappid": app, "TLS.expire": expire, "TLS.time": t}
    ub64 = None
    if userbuf is not None:
        ub64 = base64.b64encode(userbuf).decode()
        doc["TLS.userbuf"] = ub64
    doc["TLS.sig"] = ref_mac(key, user, app, t, expire, ub64)
    return doc


def verify(sig: str, **kw):
    args = {"sdk_app_id": APP, "secret_key": KEY, "user_id": USER, "now": T0 + 10}
    args.update(kw)
    return verify_usersig(sig, **args)


def code_of(sig: str, **kw) -> int:
    with pytest.raises(UserSigError) as info:
        verify(sig, **kw)
    return info.value.code


# ---- byte compatibility ----------------------------------------------------------------


def test_gen_matches_official_python_library_byte_for_byte():
    expected = pack(json.dumps(official_python_doc()))
    assert gen_usersig(APP, KEY, USER, DAY, now=T0) == expected


def test_gen_with_userbuf_matches_official_python_library():
    buf = bytes([0, 0, 7]) + b"xiaojun" + bytes(range(20))
    expected = pack(json.dumps(official_python_doc(userbuf=buf)))
    assert gen_usersig(APP, KEY, USER, DAY, now=T0, userbuf=buf) == expected


def test_default_lifetime_is_180_days():
    info, _ = decode_usersig(gen_usersig(APP, KEY, USER, now=T0))
    assert info.expire == 180 * DAY


def test_gen_uses_the_given_zlib_level():
    sig = gen_usersig(APP, KEY, USER, DAY, now=T0, level=0)
    assert sig == pack(json.dumps(official_python_doc()), level=0)
    assert sig != gen_usersig(APP, KEY, USER, DAY, now=T0, level=9)


def test_accepts_node_style_sig_compact_json_time_before_expire():
    d = official_python_doc()
    node_doc = {k: d[k] for k in ("TLS.ver", "TLS.identifier", "TLS.sdkappid", "TLS.time", "TLS.expire", "TLS.sig")}
    sig = pack(json.dumps(node_doc, separators=(",", ":")))
    assert verify(sig) == SigInfo(USER, APP, T0, DAY, None)


def test_accepts_go_style_sig_stored_blocks_and_trailing_newline():
    sig = pack(json.dumps(official_python_doc(), separators=(",", ":")) + "\n", level=0)
    assert verify(sig).identifier == USER


@pytest.mark.parametrize("level", list(range(-1, 10)))
def test_any_zlib_level_verifies(level):
    assert verify(pack(json.dumps(official_python_doc()), level=level)).time == T0


@pytest.mark.parametrize("seed", range(6))
def test_any_json_key_order_verifies(seed):
    items = list(official_python_doc(userbuf=b"\x01\x02").items())
    random.Random(seed).shuffle(items)
    info = verify(pack(json.dumps(dict(items))))
    assert info.userbuf == b"\x01\x02"


def test_round_trip_decode_gives_all_fields():
    buf = b"\x00\xffroom"
    sig = gen_usersig(APP, KEY, "u_1-x", 300, now=T0, userbuf=buf)
    info, mac = decode_usersig(sig)
    assert info == SigInfo("u_1-x", APP, T0, 300, buf)
    assert info.expire_at == T0 + 300
    assert mac == ref_mac(KEY, "u_1-x", APP, T0, 300, base64.b64encode(buf).decode())


def test_round_trip_verify_returns_info():
    sig = gen_usersig(APP, KEY, USER, DAY, now=T0)
    assert verify(sig) == SigInfo(USER, APP, T0, DAY, None)


def test_decode_does_not_check_the_hmac():
    info, _ = decode_usersig(gen_usersig(APP, "another key", USER, DAY, now=T0))
    assert info.identifier == USER


def test_ver_value_is_not_checked_like_official_verifiers():
    doc = official_python_doc()
    doc["TLS.ver"] = "2.1"
    assert verify(pack(json.dumps(doc))).identifier == USER


def test_unpadded_sig_is_accepted():
    sig = gen_usersig(APP, KEY, USER, DAY, now=T0)
    assert verify(sig.rstrip("_")).identifier == USER


# ---- failure codes -----------------------------------------------------------------------


def test_error_carries_code_and_desc():
    with pytest.raises(UserSigError) as info:
        verify("")
    err = info.value
    assert err.code == 70002
    assert str(err) == err.desc and err.desc


def test_empty_sig_is_70002_in_decode_too():
    with pytest.raises(UserSigError) as info:
        decode_usersig("")
    assert info.value.code == 70002


@pytest.mark.parametrize(
    "sig",
    [
        "not base64 !!",
        "eJw",  # impossible base64 length
        url_b64(b"plain bytes, not zlib"),
        url_b64(zlib.compress(b'{"TLS.ver": "2.0"')[:-6]),  # truncated stream
        url_b64(zlib.compress(b"not json")),
        url_b64(zlib.compress(b'["TLS.ver"]')),
        url_b64(zlib.compress(b'"string"')),
        url_b64(zlib.compress(b"\xff\xfe not utf-8")),
        url_b64(zlib.compress(json.dumps(official_python_doc()).encode()) + b"junk"),
        "A" * (MAX_SIG_CHARS + 1),
    ],
    ids=["charset", "length", "not-zlib", "truncated", "not-json", "array", "string", "not-utf8",
         "trailing-data", "too-long"],
)
def test_malformed_sig_is_70003(sig):
    assert code_of(sig) == 70003


@pytest.mark.parametrize("field", ["TLS.identifier", "TLS.sdkappid", "TLS.expire", "TLS.time", "TLS.sig", "TLS.ver"])
def test_missing_field_is_70003(field):
    doc = official_python_doc()
    del doc[field]
    assert code_of(pack(json.dumps(doc))) == 70003


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TLS.sdkappid", str(APP)),
        ("TLS.sdkappid", True),
        ("TLS.sdkappid", float(APP)),
        ("TLS.time", str(T0)),
        ("TLS.time", False),
        ("TLS.time", T0 + 0.5),
        ("TLS.expire", str(DAY)),
        ("TLS.expire", True),
        ("TLS.expire", None),
        ("TLS.identifier", 123),
        ("TLS.identifier", [USER]),
        ("TLS.sig", 1),
        ("TLS.ver", 2.0),
        ("TLS.userbuf", 5),
        ("TLS.userbuf", "not base64!"),
        ("TLS.identifier", "\ud800"),  # lone surrogate: not encodable text
    ],
)
def test_mistyped_field_is_70003(field, value):
    doc = official_python_doc()
    doc[field] = value
    assert code_of(pack(json.dumps(doc))) == 70003


def test_nan_constant_is_70003():
    text = json.dumps(official_python_doc()).replace(f'"TLS.expire": {DAY}', '"TLS.expire": NaN')
    assert "NaN" in text
    assert code_of(pack(text)) == 70003


def test_wrong_sdkappid_is_70014():
    assert code_of(gen_usersig(APP + 1, KEY, USER, DAY, now=T0)) == 70014


def test_wrong_identifier_is_70013():
    assert code_of(gen_usersig(APP, KEY, "someone_else", DAY, now=T0)) == 70013


def test_wrong_key_is_70009():
    assert code_of(gen_usersig(APP, "not the key", USER, DAY, now=T0)) == 70009


@pytest.mark.parametrize(("field", "value"), [("TLS.expire", 10 * DAY), ("TLS.time", T0 + 1), ("TLS.userbuf", "AAAA")])
def test_altered_field_with_original_mac_is_70009(field, value):
    doc = official_python_doc()
    doc[field] = value
    assert code_of(pack(json.dumps(doc))) == 70009


def test_altered_userbuf_is_70009():
    doc = official_python_doc(userbuf=b"\x01\x02\x03")
    doc["TLS.userbuf"] = base64.b64encode(b"\x01\x02\x04").decode()
    assert code_of(pack(json.dumps(doc))) == 70009


def test_expiry_boundary_includes_leeway():
    sig = gen_usersig(APP, KEY, USER, 100, now=T0)
    assert verify(sig, now=T0 + 100 + 5).time == T0  # last accepted instant
    assert code_of(sig, now=T0 + 105.001) == 70001
    assert code_of(sig, now=T0 + 100.5, leeway=0) == 70001
    assert verify(sig, now=T0 + 130, leeway=30).time == T0


def test_sig_issued_in_the_future_is_70003():
    sig = gen_usersig(APP, KEY, USER, DAY, now=T0 + 6)
    assert code_of(sig, now=T0) == 70003
    assert verify(gen_usersig(APP, KEY, USER, DAY, now=T0 + 5), now=T0).time == T0 + 5


def test_revoked_sig_is_70052():
    sig = gen_usersig(APP, KEY, USER, DAY, now=T0)
    assert code_of(sig, revoked_at=T0) == 70052
    assert code_of(sig, revoked_at=T0 + 1) == 70052
    assert verify(sig, revoked_at=T0 - 1).time == T0
    newer = gen_usersig(APP, KEY, USER, DAY, now=T0 + 1)
    assert verify(newer, revoked_at=T0).time == T0 + 1


@pytest.mark.parametrize(
    ("make", "kw", "code"),
    [
        # each sig fails two checks; the earlier check in the §1 table must win
        (lambda: gen_usersig(APP + 1, KEY, "other", DAY, now=T0), {}, 70014),
        (lambda: gen_usersig(APP, "bad key", "other", DAY, now=T0), {}, 70013),
        (lambda: gen_usersig(APP, "bad key", USER, 1, now=T0 - 100), {}, 70009),
        (lambda: gen_usersig(APP, KEY, USER, 1, now=T0 - 100), {"revoked_at": T0}, 70001),
        (lambda: gen_usersig(APP, KEY, USER, DAY, now=T0 + 100), {"revoked_at": T0 + 200}, 70003),
        (lambda: gen_usersig(APP + 1, "bad", "other", 1, now=0), {"revoked_at": T0}, 70014),
    ],
)
def test_first_failing_check_wins(make, kw, code):
    assert code_of(make(), **kw) == code


# ---- size limits and zlib bombs ------------------------------------------------------------


def _doc_of_inflated_size(size: int) -> bytes:
    doc = official_python_doc()
    doc["pad"] = ""
    base = len(json.dumps(doc).encode())
    doc["pad"] = "x" * (size - base)
    raw = json.dumps(doc).encode()
    assert len(raw) == size
    return raw


def test_inflated_json_up_to_16kib_is_accepted_and_one_byte_more_is_not():
    ok = url_b64(zlib.compress(_doc_of_inflated_size(MAX_INFLATED_BYTES), 9))
    too_big = url_b64(zlib.compress(_doc_of_inflated_size(MAX_INFLATED_BYTES + 1), 9))
    assert len(ok) <= MAX_SIG_CHARS and len(too_big) <= MAX_SIG_CHARS
    assert verify(ok).identifier == USER
    assert code_of(too_big) == 70003


def test_zlib_bomb_under_the_length_limit_is_70003():
    bomb = url_b64(zlib.compress(b"\0" * (3 * 1024 * 1024), 9))
    assert len(bomb) <= MAX_SIG_CHARS  # so the inflate cap, not the length cap, must stop it
    assert code_of(bomb) == 70003


def test_ten_megabyte_bomb_is_70003():
    bomb = url_b64(zlib.compress(b"\0" * (10 * 1024 * 1024), 9))
    assert code_of(bomb) == 70003
    with pytest.raises(UserSigError) as info:
        decode_usersig(bomb)
    assert info.value.code == 70003


def test_length_limit_is_exactly_4096_chars():
    # level 0 adds 11 bytes (header, one stored block, adler32); 3072 bytes -> 4096 chars
    at_limit = url_b64(zlib.compress(_doc_of_inflated_size(3061), 0))
    over = url_b64(zlib.compress(_doc_of_inflated_size(3062), 0))
    assert len(at_limit) == MAX_SIG_CHARS and len(over) > MAX_SIG_CHARS
    assert verify(at_limit).identifier == USER
    assert code_of(over) == 70003


# ---- robustness (property tests) --------------------------------------------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-_"


def _only_usersig_errors(sig) -> None:
    try:
        decode_usersig(sig)
    except UserSigError as err:
        assert err.code in (70002, 70003)
    try:
        verify(sig)
    except UserSigError as err:
        assert err.code in (70001, 70002, 70003, 70009, 70013, 70014, 70052)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_raises_only_usersig_error(text):
    _only_usersig_errors(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=B64URL, max_size=300))
def test_random_b64url_text_raises_only_usersig_error(text):
    _only_usersig_errors(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_behind_valid_base64_raise_only_usersig_error(raw):
    _only_usersig_errors(url_b64(raw))
    _only_usersig_errors(url_b64(zlib.compress(raw)))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(official_python_doc()) + ["TLS.userbuf"]), _json_values))
def test_random_json_objects_raise_only_usersig_error(overrides):
    doc = official_python_doc()
    doc.update(overrides)
    _only_usersig_errors(pack(json.dumps(doc)))


@settings(max_examples=100, deadline=None)
@given(
    user=st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True),
    app=st.integers(min_value=1, max_value=2**32 - 1),
    expire=st.integers(min_value=1, max_value=10**9),
    key=st.text(min_size=1, max_size=64),
    userbuf=st.none() | st.binary(max_size=64),
    level=st.integers(min_value=-1, max_value=9),
)
def test_every_issued_sig_verifies(user, app, expire, key, userbuf, level):
    sig = gen_usersig(app, key, user, expire, now=T0, userbuf=userbuf, level=level)
    info = verify_usersig(sig, sdk_app_id=app, secret_key=key, user_id=user, now=T0)
    assert info == SigInfo(user, app, T0, expire, userbuf)
