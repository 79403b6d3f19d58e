"""Multi-client login policy as data (PROTOCOL.md §4): groups, limits, who a new login evicts."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocol import (
    PLATFORMS,
    POLICIES,
    LiveSession,
    group_limit,
    groups_by_instance,
    plan_login,
    policy_group,
    validate_policy,
)

NATIVE = ("Android", "iOS", "iPad", "Windows", "Mac", "Linux")


def s(session_id: str, platform: str, instance: str | None = None, order: int = 0) -> LiveSession:
    return LiveSession(session_id, platform, instance or f"dev-{session_id}", order)


def kicked(policy, live, new, native=1, web=1, max_sessions=10) -> list[tuple[str, str]]:
    return [(sess.session_id, reason) for sess, reason in plan_login(policy, live, new, native, web, max_sessions)]


# ---- groups and limits as plain values -------------------------------------------------------

EXPECTED_GROUPS = {
    "single_platform": dict.fromkeys(PLATFORMS, "all"),
    "dual_platform": {**dict.fromkeys(NATIVE, "native"), "Web": "web"},
    "triple_platform": {"Android": "mobile", "iOS": "mobile", "iPad": "mobile",
                        "Windows": "desktop", "Mac": "desktop", "Linux": "desktop", "Web": "web"},
    "multi_platform": {p: p for p in PLATFORMS},
    "max_sessions": dict.fromkeys(PLATFORMS, "all"),
}
PLATFORM_POLICIES = tuple(p for p in POLICIES if p != "unlimited")


@pytest.mark.parametrize("policy", PLATFORM_POLICIES)
def test_group_of_every_platform(policy):
    assert {p: policy_group(policy, p) for p in PLATFORMS} == EXPECTED_GROUPS[policy]
    assert {p: policy_group(policy, p, "any-instance") for p in PLATFORMS} == EXPECTED_GROUPS[policy]
    assert not groups_by_instance(policy)


def test_unlimited_groups_by_instance_not_platform():
    assert groups_by_instance("unlimited")
    assert {policy_group("unlimited", p, "tab-1") for p in PLATFORMS} == {"instance:tab-1"}
    assert policy_group("unlimited", "iOS", "a") != policy_group("unlimited", "iOS", "b")
    assert all(group_limit("unlimited", p, 3, 10, 100) == 1 for p in PLATFORMS)  # 1 per instance
    with pytest.raises(ValueError, match="instance"):
        policy_group("unlimited", "iOS")


def test_policies_and_platforms_are_the_protocol_lists():
    assert POLICIES == ("single_platform", "dual_platform", "triple_platform", "multi_platform",
                        "max_sessions", "unlimited")
    assert PLATFORMS == ("Android", "iOS", "iPad", "Windows", "Mac", "Linux", "Web")


@pytest.mark.parametrize(
    ("policy", "platform", "expected"),
    [
        ("single_platform", "Web", 1),
        ("single_platform", "iOS", 1),
        ("dual_platform", "Android", 1),
        ("dual_platform", "Web", 4),
        ("triple_platform", "Mac", 1),
        ("triple_platform", "iPad", 1),
        ("triple_platform", "Web", 4),
        ("multi_platform", "Linux", 3),
        ("multi_platform", "Web", 4),
        ("max_sessions", "Web", 7),
        ("max_sessions", "Android", 7),
    ],
)
def test_group_limits(policy, platform, expected):
    assert group_limit(policy, platform, native_instances=3, web_instances=4, max_sessions=7) == expected


def test_max_sessions_limit_defaults_to_10():
    assert group_limit("max_sessions", "iOS") == 10


def test_unknown_policy_or_platform_is_a_value_error_with_a_sentence():
    with pytest.raises(ValueError, match="policy"):
        policy_group("quad_platform", "iOS")
    with pytest.raises(ValueError, match="platform"):
        group_limit("single_platform", "Symbian")


# ---- kick patterns, one per policy --------------------------------------------------------------


def test_single_platform_any_new_login_evicts_the_other_device():
    live = [s("A", "iOS", order=1)]
    assert kicked("single_platform", live, s("B", "Web", order=2)) == [("A", "multi_device")]
    assert kicked("single_platform", live, s("B", "Windows", order=2)) == [("A", "multi_device")]


def test_dual_platform_native_and_web_coexist():
    live = [s("A", "iOS", order=1), s("W", "Web", order=2)]
    assert kicked("dual_platform", live, s("B", "Windows", order=3)) == [("A", "multi_device")]
    assert kicked("dual_platform", live, s("C", "Web", order=3)) == [("W", "multi_device")]
    assert kicked("dual_platform", [s("W", "Web", order=1)], s("B", "Mac", order=2)) == []


def test_dual_platform_web_instances_keeps_that_many_tabs():
    live = [s("W2", "Web", order=2), s("W1", "Web", order=1), s("W3", "Web", order=3)]
    assert kicked("dual_platform", live, s("W4", "Web", order=4), web=3) == [("W1", "multi_device")]
    assert kicked("dual_platform", live, s("W4", "Web", order=4), web=4) == []
    assert kicked("dual_platform", live, s("W4", "Web", order=4), web=2) == [("W1", "multi_device"), ("W2", "multi_device")]


def test_triple_platform_mobile_desktop_web():
    live = [s("P", "Android", order=1), s("D", "Windows", order=2), s("W", "Web", order=3)]
    assert kicked("triple_platform", live, s("N", "iPad", order=4)) == [("P", "multi_device")]
    assert kicked("triple_platform", live, s("N", "Linux", order=4)) == [("D", "multi_device")]
    assert kicked("triple_platform", live, s("N", "Web", order=4)) == [("W", "multi_device")]
    assert kicked("triple_platform", [s("P", "Android", order=1)], s("N", "Mac", order=2)) == []


def test_multi_platform_each_platform_alone():
    live = [s("A1", "iOS", order=1), s("A2", "iOS", order=2), s("B", "Android", order=3)]
    assert kicked("multi_platform", live, s("N", "iOS", order=4), native=2) == [("A1", "multi_device")]
    assert kicked("multi_platform", live, s("N", "Android", order=4), native=2) == []
    assert kicked("multi_platform", live, s("N", "iPad", order=4), native=1) == []
    assert kicked("multi_platform", live, s("N", "iOS", order=4), native=1) == [("A1", "multi_device"), ("A2", "multi_device")]


def test_max_sessions_1_behaves_like_single_platform():
    live = [s("A", "iOS", order=1)]
    for new in (s("B", "Web", order=2), s("B", "Windows", order=2), s("B", "iOS", order=2)):
        assert kicked("max_sessions", live, new, max_sessions=1) == kicked("single_platform", live, new)
        assert kicked("max_sessions", live, new, max_sessions=1) == [("A", "multi_device")]
    same = s("B", "Android", "dev-A", 2)
    assert kicked("max_sessions", live, same, max_sessions=1) == kicked("single_platform", live, same)


def test_max_sessions_3_with_5_devices_keeps_the_newest_3_across_platforms():
    platforms = ["Android", "Web", "Mac", "iPad", "Web"]
    live: list[LiveSession] = []
    for order, platform in enumerate(platforms, 1):
        new = s(f"D{order}", platform, order=order)
        ended = {sess.session_id for sess, _ in plan_login("max_sessions", live, new, max_sessions=3)}
        live = [x for x in live if x.session_id not in ended] + [new]
    assert [x.session_id for x in live] == ["D3", "D4", "D5"]
    live4 = [s(f"D{i}", p, order=i) for i, p in enumerate(platforms[:4], 1)]
    assert kicked("max_sessions", live4, s("D5", "Web", order=5), max_sessions=3) == [
        ("D1", "multi_device"), ("D2", "multi_device")]


def test_unlimited_keeps_every_instance():
    live = [s(f"D{i}", p, order=i) for i, p in enumerate(["Android", "iOS", "Web", "Web", "Mac", "Android"], 1)]
    for platform in PLATFORMS:
        assert kicked("unlimited", live, s("N", platform, order=99), native=1, web=1, max_sessions=1) == []


def test_unlimited_same_instance_still_replaces():
    live = [s("A", "iOS", "phone", 1), s("B", "Web", "tab", 2)]
    assert kicked("unlimited", live, s("N", "iOS", "phone", 3)) == [("A", "same_instance")]
    assert kicked("unlimited", live, s("N", "Android", "tab", 3)) == [("B", "same_instance")]


# ---- same instance --------------------------------------------------------------------------------


def test_same_instance_replaces_even_with_room_in_the_group():
    live = [s("W1", "Web", "tab-1", 1)]
    assert kicked("dual_platform", live, s("W2", "Web", "tab-1", 2), web=3) == [("W1", "same_instance")]


def test_same_instance_is_not_also_counted_against_the_limit():
    live = [s("A", "iOS", "phone", 1)]
    assert kicked("single_platform", live, s("B", "Android", "phone", 2)) == [("A", "same_instance")]


def test_same_instance_on_another_group_comes_first_then_multi_device():
    live = [s("D", "Windows", "pc", 2), s("M", "iOS", "shared", 1)]
    assert kicked("triple_platform", live, s("N", "Mac", "shared", 3)) == [("M", "same_instance"), ("D", "multi_device")]


def test_new_login_is_never_evicted_and_is_not_counted_twice_when_listed():
    new = s("N", "iOS", order=5)
    live = [s("A", "iOS", order=1), new]
    assert kicked("single_platform", live, new) == [("A", "multi_device")]


def test_no_live_sessions_nothing_to_end():
    for policy in POLICIES:
        assert plan_login(policy, [], s("N", "Web", order=1)) == []


# ---- properties over random login sequences ---------------------------------------------------------

_logins = st.lists(
    st.tuples(st.sampled_from(PLATFORMS), st.sampled_from(["i0", "i1", "i2", "i3", "i4", "i5"])),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    native=st.integers(min_value=1, max_value=3),
    web=st.integers(min_value=1, max_value=10),
    max_sessions=st.integers(min_value=1, max_value=5),
    logins=_logins,
)
def test_server_state_always_fits_the_policy(policy, native, web, max_sessions, logins):
    live: list[LiveSession] = []

    def grp(x: LiveSession) -> str:
        return policy_group(policy, x.platform, x.instance_id)

    for order, (platform, instance) in enumerate(logins):
        new = LiveSession(f"S{order}", platform, instance, order)
        plan = plan_login(policy, live, new, native, web, max_sessions)
        ended = [sess for sess, _ in plan]
        # only live sessions end, each once; the newest login always wins
        assert all(sess in live for sess in ended) and len(set(ended)) == len(ended)
        # same_instance exactly for the sessions with the new instance; multi_device only in the new group
        for sess, reason in plan:
            if reason == "same_instance":
                assert sess.instance_id == instance
            else:
                assert reason == "multi_device" and policy != "unlimited"  # unlimited: same_instance only
                assert grp(sess) == grp(new)
                assert sess.instance_id != instance
        # multi_device evictions are the oldest of the group and no more than needed
        group = grp(new)
        same_group = sorted(
            (x for x in live if x.instance_id != instance and grp(x) == group),
            key=lambda x: x.order,
        )
        limit = group_limit(policy, platform, native, web, max_sessions)
        multi = [sess for sess, reason in plan if reason == "multi_device"]
        assert multi == same_group[: max(0, len(same_group) + 1 - limit)]
        live = [x for x in live if x not in ended] + [new]
        # invariants of the resulting state
        instances = [x.instance_id for x in live]
        assert len(instances) == len(set(instances))
        counts: dict[str, int] = {}
        for x in live:
            counts[grp(x)] = counts.get(grp(x), 0) + 1
        assert counts[group] <= limit
        assert new in live
        if policy == "unlimited":  # nothing but same-instance replacement: one live session per instance
            assert len(live) == len(set(i for _p, i in logins[: order + 1]))


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("native", "web"), [(1, 1), (3, 10), (2, 5)])
def test_valid_policy_settings(policy, native, web):
    assert validate_policy(policy, native, web) is None
    assert validate_policy(policy, native, web, 1) is None and validate_policy(policy, native, web, 100) is None


@pytest.mark.parametrize("bad", [0, 101, True, "3", 2.0])
def test_invalid_max_sessions_gets_one_sentence(bad):
    message = validate_policy("max_sessions", 1, 1, bad)
    assert isinstance(message, str) and "max_sessions" in message and "1 to 100" in message


@pytest.mark.parametrize(
    ("policy", "native", "web", "word"),
    [
        ("quad_platform", 1, 1, "policy"),
        ("", 1, 1, "policy"),
        (None, 1, 1, "policy"),
        ("single_platform", 0, 1, "native_instances"),
        ("single_platform", 4, 1, "native_instances"),
        ("single_platform", True, 1, "native_instances"),
        ("single_platform", "2", 1, "native_instances"),
        ("multi_platform", 1, 0, "web_instances"),
        ("multi_platform", 1, 11, "web_instances"),
        ("multi_platform", 1, 2.0, "web_instances"),
    ],
)
def test_invalid_policy_settings_get_one_sentence(policy, native, web, word):
    message = validate_policy(policy, native, web)
    assert isinstance(message, str) and word in message
    assert message.endswith(".") and "\n" not in message
