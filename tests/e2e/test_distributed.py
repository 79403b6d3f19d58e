"""Distributed runs end to end on loopback: ``--processes 2`` and an explicit master + 2
workers. Totals reconcile (journal request rows == Locust's total; all rows == the summary), kick races whose
devices live on different workers are checked like local ones, a worker journaling on its
own disk still counts, and a killed worker is reported with its share."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from harness.results.journal import EVENT_OPS
from tests.e2e.conftest import LOCUST, ROOT, run_locust

RACE = ["--set", "scenarios.kick_race.cross_worker=true", "--set", "scenarios.kick_race.devices=4",
        "--set", "scenarios.kick_race.window_ms=0", "--set", "scenarios.kick_race.pause_s=0.1",
        "--set", "scenarios.kick_race.settle_ms=300", "--set", "scenarios.kick_race.lead_ms=100"]


def journal_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((folder / "journal").glob("*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]


def locust_total(folder: Path) -> int:
    for line in (folder / "locust_stats.csv").read_text().splitlines():
        if ",Aggregated," in line:
            return int(line.split(",")[2])
    raise AssertionError("no Aggregated row in locust_stats.csv")


def assert_races_checked_like_local_ones(rows: list[dict], min_races: int) -> None:
    races = [r for r in rows if r["op"] == "race"]
    kicks = defaultdict(list)
    for k in rows:
        if k["op"] == "kicked_offline":
            kicks[k["race"]].append(k)
    across = [r for r in races if len(r["data"]["workers"]) > 1]
    assert len(across) >= min_races, Counter(len(r["data"]["workers"]) for r in races)
    for r in across:
        d = r["data"]
        assert r["outcome"] == "ok", r
        assert [x["i"] for x in d["devices"]] == [0, 1, 2, 3]
        assert len(d["survivors"]) == 1                              # single_platform: exactly one survivor
        assert [o["Status"] for o in d["online"]] == ["Online"]
        got = kicks[r["race"]]
        assert len(got) == 3 and len({k["session"] for k in got}) == 3   # the three others: one kick each
        assert {k["w"] for k in got} | {r["w"]} >= set(d["workers"]) - {r["w"]}
        assert d["survivors"][0] not in {k["session"] for k in got}


def test_processes_2_totals_reconcile_and_cross_worker_races_hold(tmp_path):
    port = str(free_port())  # not the default 5557: concurrent runs on this host must not swap workers
    run = run_locust(tmp_path / "results", "--processes", "2", "--master-bind-host", "127.0.0.1",
                     "--master-bind-port", port, "--master-port", port, "--scenario", "mass_login,kick_race",
                     "-u", "24", "-r", "24", "-t", "7s", "--set", "scenarios.mass_login.hold_s=3",
                     "--set", "scenarios.mass_login.heartbeat_s=1", *RACE)
    assert run.run_dir is not None, run.stderr
    rows = journal_rows(run.run_dir)
    s = run.summary
    workers = s["workers"]
    assert len(workers) == 2 and all(w["finished"] and w["journal_on_master"] for w in workers.values())
    # one journal per worker, each n gap-free; the totals agree everywhere
    by_w = Counter(r["w"] for r in rows)
    assert set(by_w) == set(workers)
    for w, n in by_w.items():
        assert sorted(r["n"] for r in rows if r["w"] == w) == list(range(n))
        assert workers[w]["rows"] == n
    requests = [r for r in rows if r["op"] not in EVENT_OPS]     # events are journaled, not Locust requests
    assert len(requests) == locust_total(run.run_dir) == s["locust_total"] < len(rows)
    assert len(rows) == s["distributed"]["rows_reported"]
    assert sum(op["count"] for op in s["ops"].values()) == len(rows)
    assert s["missing_workers"] == [] and s["checks"]["journal_integrity"]["violations"] == 0
    # account pools are partitioned: no mass_login account logs in from two workers
    owners = defaultdict(set)
    for r in rows:
        if r["op"] == "login" and r["scenario"] == "mass_login":
            owners[r["user"]].add(r["w"])
    assert owners and all(len(ws) == 1 for ws in owners.values())
    assert_races_checked_like_local_ones(rows, min_races=5)
    # heartbeats are staggered: first heartbeats after connect spread over the 1 s period
    connected = {r["conn"]: r["end"] for r in rows if r["op"] == "connect" and r["scenario"] == "mass_login"}
    first = {}
    for r in rows:
        if r["op"] == "heartbeat" and r["conn"] in connected:
            first.setdefault(r["conn"], r["start"] - connected[r["conn"]])
    offsets = sorted(v / 1e9 for v in first.values())
    assert len(offsets) >= 20 and offsets[-1] - offsets[0] > 0.5, offsets
    assert run.code == 0, run.stderr[-3000:]


# ----------------------------------------------------------------------------- explicit master + workers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A headless master and workers started by pid; ``stop()`` kills whatever is left."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.env = {k: v for k, v in os.environ.items() if k != "CHAT_SECRET_KEY"}

    def start(self, *args: str, name: str) -> subprocess.Popen:
        out = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen([LOCUST, "-f", "locustfile.py", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=self.env)
        self.procs.append(p)
        return p

    def master(self, *args: str) -> subprocess.Popen:
        return self.start("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(self.port),
                          "--expect-workers", "2", "--headless", "--only-summary", "--stop-timeout", "3",
                          "--set", f"run.results_dir={self.tmp / 'results'}", *args, name="master")

    def worker(self, name: str, *args: str) -> subprocess.Popen:
        return self.start("--worker", "--master-host", "127.0.0.1", "--master-port", str(self.port), *args, name=name)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_master_and_two_workers_one_journaling_on_its_own_disk(cluster, tmp_path):
    args = ("--scenario", "kick_race", *RACE)
    master = cluster.master("-u", "6", "-r", "6", "-t", "6s", *args)
    cluster.worker("w_shared", *args)
    cluster.worker("w_remote", "--local-journal", "--set", f"run.results_dir={tmp_path / 'remote'}", *args)
    code = master.wait(60)
    run_dir = (tmp_path / "results" / "latest").resolve()
    s = json.loads((run_dir / "summary.json").read_text())
    remote_dirs = list((tmp_path / "remote").glob("*/journal"))
    assert len(remote_dirs) == 1 and remote_dirs[0].parent.name == run_dir.name   # same run id, own folder
    here, there = journal_rows(run_dir), journal_rows(remote_dirs[0].parent)
    assert here and there and not {r["w"] for r in here} & {r["w"] for r in there}
    workers = s["workers"]
    remote = next(n for n, w in workers.items() if not w["journal_on_master"])
    assert workers[remote]["rows"] == len(there) and {r["w"] for r in there} == {remote}
    # the summary's numbers come from the workers' reports and still count everyone
    assert s["distributed"]["source"] == "worker_reports"
    assert sum(op["count"] for op in s["ops"].values()) == len(here) + len(there)
    assert sum(op["count"] for op in s["ops"].values() if op["kind"] == "request") == s["locust_total"]
    assert s["ops"]["race"]["count"] == sum(r["op"] == "race" for r in here + there)
    assert s["checks_partial"]["journals_missing"] == [remote]
    assert "journaled on its own disk" in cluster.log("master")
    # with both journals together, cross-worker races pass the same checks as local ones
    assert_races_checked_like_local_ones(here + there, min_races=3)
    assert code == 0 or s["exit_code"] == code, cluster.log("master")[-3000:]


def test_a_killed_worker_is_reported_with_its_share(cluster, tmp_path):
    master = cluster.master("-u", "20", "-r", "20", "-t", "9s", "--scenario", "mass_login",
                            "--set", "scenarios.mass_login.hold_s=1", "--set", "scenarios.mass_login.heartbeat_s=0.5")
    cluster.worker("w_a", "--scenario", "mass_login")
    victim = cluster.worker("w_b", "--scenario", "mass_login")
    results = tmp_path / "results"
    deadline = time.monotonic() + 30
    journal = None
    while time.monotonic() < deadline and journal is None:   # wait until the victim journals rows
        found = list(results.glob(f"*/journal/w*-{victim.pid}.jsonl"))
        journal = found[0] if found and found[0].stat().st_size > 2000 else None
        time.sleep(0.2)
    assert journal is not None, cluster.log("master")[-3000:]
    time.sleep(3.5)  # past Locust's 3 s report interval: the master has some of its numbers
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    code = master.wait(60)
    s = json.loads((journal.parent.parent / "summary.json").read_text())
    name = journal.stem
    assert s["missing_workers"] == [name]
    miss = s["distributed"]["missing"][0]
    assert miss["worker"] == name and miss["users"] >= 1 and 0 < miss["user_share"] < 1
    assert miss["rows_reported"] > 0 and miss["rows_on_disk"] > 0
    assert s["workers"][name]["finished"] is False and "gone" in s["workers"][name]
    assert s["gates"]["workers.missing"]["passed"] is False
    assert code == s["exit_code"] != 0
    assert f"worker {name} went away" in cluster.log("master")
