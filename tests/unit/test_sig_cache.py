"""LocalSigSource's sig cache: reuse while most of a sig's lifetime remains, fresh on demand."""
from __future__ import annotations

import pytest

from harness.sources import LocalSigSource
from harness.usersig import decode_usersig, verify_usersig

SDKAPPID = 1400000000
KEY = "unit-test-key"
T0 = 1_700_000_000.0


class Clock:
    """A settable unix-seconds clock."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def issued_at(sig: str) -> int:
    return decode_usersig(sig)[0].time


def make(**kw) -> tuple[LocalSigSource, Clock]:
    clock = Clock()
    return LocalSigSource(SDKAPPID, KEY, clock=clock, **kw), clock


def test_cached_sig_is_reused_while_more_than_half_its_lifetime_remains() -> None:
    src, clock = make()
    first = src.get("alice", 100, fresh=False)
    clock.now = T0 + 49.5
    assert src.get("alice", 100, fresh=False) == first
    clock.now = T0 + 50.0   # half of the lifetime is gone: a new sig, issued now
    second = src.get("alice", 100, fresh=False)
    assert second != first and issued_at(second) == int(T0 + 50)
    # whatever was handed out verifies for its user at the time it was handed out
    verify_usersig(second, sdk_app_id=SDKAPPID, secret_key=KEY, user_id="alice", now=clock.now)


def test_default_and_fresh_true_always_issue_a_new_sig() -> None:
    src, clock = make()
    cached = src.get("bob", 600, fresh=False)
    clock.now = T0 + 1
    fresh = src.get("bob", 600)                 # the default: relogin paths rely on it
    assert fresh != cached and issued_at(fresh) == int(T0 + 1)
    clock.now = T0 + 2
    assert issued_at(src.get("bob", 600, fresh=True)) == int(T0 + 2)
    # a fresh sig is the newest one: later cached asks reuse it
    assert issued_at(src.get("bob", 600, fresh=False)) == int(T0 + 2)


def test_other_lifetime_other_user_or_forgotten_sig_is_not_reused() -> None:
    src, clock = make()
    a = src.get("carol", 600, fresh=False)
    clock.now = T0 + 1
    other_life = src.get("carol", 300, fresh=False)
    assert decode_usersig(other_life)[0].expire == 300 and issued_at(other_life) == int(T0 + 1)
    assert decode_usersig(src.get("dave", 600, fresh=False))[0].identifier == "dave"
    b = src.get("carol", 300, fresh=False)
    assert b == other_life
    src.forget("carol")                          # e.g. the server answered 70052 (revoked)
    clock.now = T0 + 2
    assert issued_at(src.get("carol", 300, fresh=False)) == int(T0 + 2)
    src.forget("nobody")                         # unknown users are fine
    assert a != other_life


def test_an_expired_or_future_dated_entry_is_never_reused() -> None:
    src, clock = make(reuse_fraction=0.9)
    first = src.get("erin", 4, fresh=False)
    clock.now = T0 + 5                           # past its expiry
    assert src.get("erin", 4, fresh=False) != first
    clock.now = T0 - 100                         # the clock went back: do not trust the entry
    assert issued_at(src.get("erin", 4, fresh=False)) == int(T0 - 100)


def test_cache_is_bounded_oldest_account_goes_first() -> None:
    src, clock = make(max_cached=2)
    a = src.get("u1", 600, fresh=False)
    b = src.get("u2", 600, fresh=False)
    src.get("u3", 600, fresh=False)             # evicts u1
    clock.now = T0 + 1
    assert src.get("u2", 600, fresh=False) == b
    assert src.get("u1", 600, fresh=False) != a
    off, clock2 = make(max_cached=0)             # caching off: always new
    x = off.get("u1", 600, fresh=False)
    clock2.now = T0 + 1
    assert off.get("u1", 600, fresh=False) != x


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2])
def test_reuse_fraction_out_of_range_is_refused_with_a_sentence(fraction: float) -> None:
    with pytest.raises(ValueError, match="reuse_fraction"):
        LocalSigSource(SDKAPPID, KEY, reuse_fraction=fraction)


def test_repr_hides_the_key() -> None:
    src, _ = make()
    assert KEY not in repr(src) and "***" in repr(src)
