"""Benchmark: mass_login flow rate with the journal on vs off, in ONE run (target ratio >= 0.9).

One reference server (pinned to CPU 1); the load generator (pinned to CPU 0) runs the
mass_login scenario as connect+login+close flows (hold_s=0, logout=false) through
bench/_journal_locustfile.py, alternately with the real journal (A) and with
``Journal.record`` / ``flush`` monkeypatched to no-ops (B), interleaved A/B, B/A, A/B, ... to
cancel drift. Both arms count ok logins from Locust's request event (the same listener), inside a
measuring window of ``--seconds`` s after ``--warmup`` s, and sample the generator's CPU time.

Printed per run and per arm (median): flows/s, generator cores, flows per generator
CPU-second; then on/off ratios (median of adjacent pairs) for both, judged per core (the
wall rate is also capped by the server and by other load on the machine).

Loopback only; every process started here is stopped by pid; files go to a temp dir.

  .venv/bin/python bench/journal_overhead.py [--seconds 8] [--pairs 3] [--users 50]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root (harness.*)

from _common import (  # noqa: E402
    BENCH,
    REPO,
    RefServer,
    Result,
    count_between,
    cpu_plan,
    fmt_table,
    journal_logins,
    log_tail,
    mass_login_args,
    measure_window,
    median,
    new_secret,
    spawn,
    stop_tree,
    wait_exit,
)

TARGET = 0.9


def run_arm(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, journal: str,
            tag: str) -> Result:
    """One mass_login run with the journal ``on`` or ``off``; counts from the request event."""
    name = f"journal {journal}"
    results = work / f"run-{tag}"
    results.mkdir()
    out = work / f"count-{tag}.json"
    run_s = int(args.warmup + args.seconds + 2)
    env = dict(os.environ, CHAT_SECRET_KEY=server.secret_key, BENCH_JOURNAL=journal, BENCH_OUT=str(out))
    log_path = work / f"run-{tag}.log"
    cmd = [sys.executable] + mass_login_args(BENCH / "_journal_locustfile.py", server, args.users, run_s, results)
    proc = spawn(cmd, env=env, cwd=REPO, cpu=cpu, log_path=log_path)
    try:
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 120)  # bounded; stop_tree below ends it if still running
    finally:
        stop_tree(proc)
    if win is None or not out.exists():
        return Result(name, note="no result: " + log_tail(log_path))
    doc = json.loads(out.read_text(encoding="utf-8"))
    res = Result(name, ok=count_between(doc["ok"], win.a_ns, win.b_ns), failed=int(doc["fail"]),
                 seconds=win.seconds, gen_util=win.gen_util, server_util=win.server_util)
    if doc.get("journal") != journal:
        res.note = f"the locustfile ran with the journal {doc.get('journal')}, not {journal}"
    if journal == "on":
        ok_rows, _bad = journal_logins(results)
        res.extra["journal_ok_rows"] = len(ok_rows)
        res.extra["event_ok"] = len(doc["ok"])
        if len(ok_rows) != len(doc["ok"]):
            res.note = f"journal has {len(ok_rows)} ok login rows, request events {len(doc['ok'])}"
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="mass_login flow rate, journal on vs off (A/B interleaved)")
    p.add_argument("--seconds", type=float, default=8.0, help="measuring window per run, s (default 8)")
    p.add_argument("--warmup", type=float, default=4.0, help="start-up + ramp excluded before the window, s (default 4)")
    p.add_argument("--users", type=int, default=50, help="concurrent users (default 50)")
    p.add_argument("--pairs", type=int, default=3, help="A/B pairs (default 3: on,off, off,on, on,off)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, journals)")
    args = p.parse_args(argv)
    if not (1 <= args.users <= 5000) or not (3 <= args.seconds <= 600) or args.warmup < 2 or not (1 <= args.pairs <= 20):
        p.error("use 1 <= --users <= 5000, 3 <= --seconds <= 600, --warmup >= 2, 1 <= --pairs <= 20")

    gen_cpu, srv_cpu = cpu_plan()
    work = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    print(f"journal_overhead: users={args.users} window={args.seconds:g}s warmup={args.warmup:g}s pairs={args.pairs}; "
          f"generator on CPU {gen_cpu}, server on CPU {srv_cpu}; files in {work}", flush=True)
    server = RefServer(work, secret_key=new_secret(), policy="multi_platform", cpu=srv_cpu)
    runs: list[tuple[Result, Result]] = []
    try:
        server.start()
        for i in range(args.pairs):
            pair = []
            order = ("on", "off") if i % 2 == 0 else ("off", "on")  # A/B, B/A, ...: cancels linear drift
            for journal in order:
                res = run_arm(server, work, args, gen_cpu, journal, f"{i}-{journal}")
                pair.append(res)
                if res.seconds:
                    print(f"  pair {i + 1} journal {journal:3}: {res.rate:8.1f} flows/s, generator "
                          f"{res.gen_util:.2f} cores, {res.per_core:8.1f} flows per CPU-s"
                          + (f"  ({res.note})" if res.note else ""), flush=True)
                else:
                    print(f"  pair {i + 1} journal {journal:3}: {res.note}", flush=True)
            on, off = (pair[0], pair[1]) if order[0] == "on" else (pair[1], pair[0])
            runs.append((on, off))
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report(runs)


def report(runs: list[tuple[Result, Result]]) -> int:
    """Print the per-arm medians and the on/off ratios; 0 always (a bench, not a gate)."""
    good = [(a, b) for a, b in runs if a.seconds and b.seconds]
    if not good:
        print("no complete pair: nothing to compare")
        return 1
    rows = []
    for label, arm in (("journal on", [a for a, _ in good]), ("journal off", [b for _, b in good])):
        rows.append((label, sum(r.ok for r in arm), sum(r.failed for r in arm),
                     f"{median([r.rate for r in arm]):.1f}", f"{median([r.gen_util for r in arm]):.2f}",
                     f"{median([r.per_core for r in arm]):.1f}", f"{median([r.server_util for r in arm]):.2f}"))
    print()
    print(fmt_table(["arm", "ok logins", "failed", "flows/s (median)", "gen cores", "flows/CPU-s", "server cores"],
                    rows))
    core_ratios = [a.per_core / b.per_core for a, b in good if b.per_core]
    per_core = median(core_ratios)
    wall = median([a.rate / b.rate for a, b in good if b.rate])
    spread = f" [{min(core_ratios):.3f}..{max(core_ratios):.3f}]" if len(core_ratios) > 1 else ""
    print()
    print(fmt_table(["ratio on/off", "per core", "wall flows/s", "target", "verdict (per core)"],
                    [("median of pairs", f"{per_core:.3f}{spread}", f"{wall:.3f}", f">= {TARGET:g}",
                      "ok" if per_core >= TARGET else "MISSED")]))
    print("\nper core = successful flows per CPU-second of the generator (pinned to one CPU); a pair is two"
          "\n           adjacent runs, one with and one without the journal; [min..max] over pairs.")
    cpu_on = median([1e6 / a.per_core for a, _ in good if a.per_core])
    cpu_off = median([1e6 / b.per_core for _, b in good if b.per_core])
    print(f"\nCPU per flow: {cpu_on:.0f} us with the journal, {cpu_off:.0f} us without: "
          f"the journal costs {cpu_on - cpu_off:+.0f} us per flow (3 rows: connect, login, disconnect)")
    if per_core < TARGET:
        print("where the time goes: Journal.record builds one dict per row on the request path; "
              "Journal.flush json-encodes and writes them from a background greenlet every run.journal_flush_s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
