"""Runtime pieces of distributed runs, without sockets: account partitions, source-address
spreading, descriptor budgeting, the mergeable worker tallies, race splitting."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.config import load_config
from harness.runner.distributed import (LogHist, Tally, TalliedJournal, assign_devices, bucket_bounds, bucket_of,
                                 missing_share, summary_parts)
from harness.errors import ConfigError
from harness.runner.runtime import AccountPool, Runtime, check_fit, fds_needed, fds_per_user, loopback_sources

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- accounts
def test_account_pools_of_different_workers_never_share_an_account():
    pools = [AccountPool("storm", 500, str(tag)) for tag in range(12)]
    names = [p.acquire() for p in pools for _ in range(500)]
    assert None not in names
    assert len(set(names)) == len(names) == 12 * 500
    # worker 1's 11th account is not worker 11's first: the tag is delimited
    assert "storm1_1" in names and "storm11_1" in names


def test_account_pool_reuses_released_accounts_and_says_when_empty():
    p = AccountPool("sw", 2, "0")
    a, b = p.acquire(), p.acquire()
    assert p.acquire() is None and p.in_use == 2
    p.release(a)
    assert p.acquire() == a and p.in_use == 2
    assert b != a


# ----------------------------------------------------------------------------- source addresses
def test_loopback_targets_spread_over_253_source_addresses():
    srcs = loopback_sources("127.0.0.1", "auto")
    if sys.platform.startswith("linux"):  # elsewhere 127.0.0.2.. are not local addresses
        assert srcs[0] == "127.0.0.2" and srcs[-1] == "127.0.0.254" and len(srcs) == 253
    else:
        assert srcs == [None]
    assert loopback_sources("10.1.2.3", "auto") == [None]      # not loopback: the OS picks
    assert loopback_sources("127.0.0.1", "none") == [None]
    assert loopback_sources("127.0.0.1", ["127.0.0.9"]) == ["127.0.0.9"]


def test_runtime_hands_out_source_addresses_round_robin():
    rt = Runtime(cfg=load_config(None, env={}), role="local")
    rt._sources = loopback_sources("127.0.0.1", "auto")
    got = [rt.next_source_address() for _ in range(253 * 4)]
    counts = {a: got.count(a) for a in set(got)}
    assert len(counts) == 253 and set(counts.values()) == {4}


# ----------------------------------------------------------------------------- descriptors
def test_kick_race_users_need_one_descriptor_per_device():
    cfg = load_config(None, overrides=["scenarios.kick_race.devices=5"], env={})
    assert fds_per_user(cfg, "kick_race") == 5 + 1          # + the REST query
    assert fds_per_user(cfg, "mass_login") == 1
    one, total = fds_needed(cfg, {"kick_race": 1}, 1000, 1)
    two, total2 = fds_needed(cfg, {"kick_race": 1}, 1000, 2)
    assert one > 6000 and total > 6000
    assert two < one * 0.6 and abs(total2 - total) < 10    # per process halves, the target's total does not


def test_users_that_cannot_fit_get_one_sentence_naming_u():
    cfg = load_config(None, overrides=["scenarios.kick_race.devices=3"], env={})
    with pytest.raises(ConfigError) as exc:
        check_fit(cfg, {"kick_race": 1}, 20000, 1, limit=20000)
    msg = str(exc.value)
    assert exc.value.key == "-u" and exc.value.exit_code == 2
    assert "20000 users" in msg and "RLIMIT_NOFILE allows 20000" in msg and "\n" not in msg
    check_fit(cfg, {"kick_race": 1}, 2000, 1, limit=20000)  # fits: no error
    with pytest.raises(ConfigError, match="embedded target"):
        check_fit(cfg, {"kick_race": 1}, 6000, 4, limit=20000, target_limit=20000)


def test_open_model_budget_follows_the_arrival_rate_not_the_users():
    cfg = load_config(None, overrides=["scenarios.mass_login.arrival_rate=1000",
                                       "scenarios.mass_login.hold_s=8"], env={})
    per_proc, _ = fds_needed(cfg, {"mass_login": 1}, 1, 2)
    assert 5000 <= per_proc <= 5300                         # 500/s x 10 s in flight per process


def test_nofile_soft_limit_is_raised_to_the_hard_limit():
    code = ("import resource; from harness.runner.runtime import raise_nofile_limit\n"
            "s, h = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, h), h))\n"
            "print(*raise_nofile_limit(), h)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    soft, hard, before = map(int, out.stdout.split())
    assert soft == hard >= before


# ----------------------------------------------------------------------------- tallies
def test_log_buckets_bound_the_relative_error():
    rng = random.Random(7)
    for v in [0, 1, 63, 64, 65, 127, 128, 1000, 10**6, 10**9] + [rng.randrange(10**10) for _ in range(2000)]:
        lo, hi = bucket_bounds(bucket_of(v))
        assert lo <= v <= hi
        assert hi - lo <= max(0, lo) / 32


def test_merged_quantiles_match_exact_nearest_rank_within_3_percent():
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(8, 1.2, 4000).astype(int) for _ in range(3)]
    hists = []
    for p in parts:
        h = LogHist()
        for v in p:
            h.add(int(v))
        hists.append(LogHist.from_wire(json.loads(json.dumps(h.to_wire()))))
    merged = LogHist()
    for h in hists:
        merged.merge(h)
    allv = np.sort(np.concatenate(parts))
    assert merged.n == len(allv)
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = allv[int(np.ceil(q * len(allv))) - 1]
        got = merged.quantile(q)
        assert exact <= got <= exact * (1 + 1 / 32) + 1


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        op = rng.choice(["login", "connect", "heartbeat"])
        outcome = rng.choices(["ok", "fail", "info"], [90, 7, 3])[0]
        code = 0 if outcome == "ok" else rng.choice([70001, 6206, -1])
        intended = 10**18 + i * 10**6
        start = intended + rng.randrange(0, 5 * 10**6)
        out.append({"op": op, "outcome": outcome, "code": code, "intended": intended, "start": start,
                    "end": start + rng.randrange(10**5, 10**8)})
    return out


def test_summary_from_worker_tallies_matches_the_journal_numbers(tmp_path):
    rows = _rows(3000, 1)
    tallies = []
    for k in range(3):  # three workers, each shipping deltas in several reports
        j = TalliedJournal(tmp_path / f"w{k}.jsonl", f"w{k}")
        total = Tally()
        for i, r in enumerate(rows[k::3]):
            j.record(scenario="mass_login", **r)
            if i % 97 == 0:
                total.merge(Tally.from_wire(json.loads(json.dumps(j.take().to_wire()))))
        total.merge(Tally.from_wire(j.take().to_wire()))
        tallies.append(total)
    merged = Tally()
    for t in tallies:
        merged.merge(t)
    parts = summary_parts(merged, 10.0)
    assert parts["rows"] == merged.rows == len(rows)
    for op in ("login", "connect", "heartbeat"):
        mine = [r for r in rows if r["op"] == op]
        got = parts["ops"][op]
        assert got["count"] == len(mine) and got["rate_per_s"] == len(mine) / 10.0
        for outcome in ("ok", "fail", "info"):
            assert got[outcome] == sum(r["outcome"] == outcome for r in mine)
        lat = sorted((r["end"] - r["intended"]) / 1e6 for r in mine if r["outcome"] == "ok")
        exact99 = lat[int(np.ceil(0.99 * len(lat))) - 1]
        assert exact99 <= got["p99_ms"] <= exact99 * 1.032 + 0.002
        assert got["max_ms"] == pytest.approx(lat[-1])
    assert parts["codes"] == {str(c): sum(r["code"] == c for r in rows) for c in {r["code"] for r in rows}}


def test_tally_from_garbage_is_empty_not_an_error():
    for junk in (None, 3, "x", {"ops": {"login": [1, 2]}, "lat": {"login": [["a", 1]]}, "codes": [[1]]}):
        t = Tally.from_wire(junk)
        assert t.rows == 0 and summary_parts(t, 1.0)["ops"] == {}


def test_missing_share_names_the_worker_and_its_part():
    m = missing_share("w1-42", users=10, users_total=40, rows_reported=900, rows_on_disk=912, last_seen_s=4.25,
                      reason="no message for 3 s")
    assert m["worker"] == "w1-42" and m["user_share"] == 0.25 and m["rows_on_disk"] == 912


# ----------------------------------------------------------------------------- races
def test_race_devices_are_spread_over_workers_owner_first():
    plan = assign_devices(5, ["a", "b", "c"], "b")
    assert plan == {"b": [0, 3], "c": [1, 4], "a": [2]}
    assert assign_devices(3, [], "solo") == {"solo": [0, 1, 2]}
    assert sorted(i for v in assign_devices(50, ["x", "y"], "y").values() for i in v) == list(range(50))


def test_worker_tallies_count_expected_outcomes_and_events_like_the_journal(tmp_path):
    j = TalliedJournal(tmp_path / "w0.jsonl", "w0")
    base = dict(scenario="relogin_expiry", intended=1, start=1, end=2 * 10**6)
    j.record(op="login", outcome="fail", code=70001, expect=70001, **base)      # provoked and got: a pass
    j.record(op="login", outcome="ok", code=0, expect=70001, **base)           # stale sig accepted: a failure
    j.record(op="login", outcome="ok", code=0, **base)
    j.record(op="disconnect", outcome="info", code=-1, **base)
    t = Tally.from_wire(json.loads(json.dumps(j.take().to_wire())))
    parts = summary_parts(t, 1.0)
    login = parts["ops"]["login"]
    assert (login["count"], login["ok"], login["fail"], login["info"], login["expected"]) == (3, 1, 1, 0, 1)
    assert login["kind"] == "request" and login["p50_ms"] is not None
    assert parts["expected"] == {"login": {"70001": 1}}
    assert parts["codes_by_op"] == {"disconnect": {"-1": 1}, "login": {"0": 2, "70001": 1}}
    d = parts["ops"]["disconnect"]
    assert d["kind"] == "event" and d["p99_ms"] is None and parts["events"] == {"disconnect": {"count": 1, "rate_per_s": 1.0}}
