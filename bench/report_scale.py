"""How the report scales with journal size (not a test: prints numbers and ratios).

Synthesizes run folders with journals of N rows (a realistic mix of ops, outcomes and
codes over 600 s, spread over several worker files, with kick races, faults, a
summary.json and a Locust history), then times ``build_report`` on each in a fresh
subprocess and reads that subprocess's own peak RSS (``VmHWM`` of /proc/self/status: not
``ru_maxrss``, which Linux carries over from the parent into a vfork+exec child, so a parent
that had just synthesized 10^7 rows made every child look as big as itself).

    .venv/bin/python bench/report_scale.py                 # sizes 1e5, 1e6
    .venv/bin/python bench/report_scale.py --sizes 1e5,1e6,1e7 --allow-huge
    .venv/bin/python bench/report_scale.py --no-charts     # aggregation + tables only

Synthetic runs are cached under bench/out/ (ignored by git); ``--regen`` rebuilds them.
Targets: <= 20 s and <= 1.5 GiB peak RSS at 10^6 rows; time per row should not grow.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
T0_NS = 1_750_000_000 * 1_000_000_000
DURATION_S = 600
WORKERS = 4
HUGE = 5_000_000

# op, share of rows, scenario, median service ms
OPS = [
    ("connect", 0.12, "mass_login", 3.0), ("login", 0.15, "mass_login", 8.0),
    ("heartbeat", 0.30, "mass_login", 1.0), ("status", 0.07, "account_switch", 1.5),
    ("logout", 0.09, "mass_login", 2.0), ("disconnect", 0.12, "mass_login", 0.0),
    ("relogin", 0.02, "relogin_expiry", 40.0), ("sig_expired", 0.02, "relogin_expiry", 0.0),
    ("switch", 0.04, "account_switch", 15.0), ("kicked_offline", 0.02, "kick_race", 0.0),
    ("query_online", 0.045, "kick_race", 4.0), ("race", 0.005, "kick_race", 600.0),
]
FAIL_CODES = np.array([70001, 6206, 70050, 70009, 6014, 70013])
FAIL_P = np.array([0.35, 0.2, 0.15, 0.1, 0.1, 0.1])


def _synth_worker(rng: np.random.Generator, n: int, w: str, first_session: int) -> pd.DataFrame:
    """Flat rows of one worker (times in unix ns), sorted by end time."""
    names = [o[0] for o in OPS]
    share = np.array([o[1] for o in OPS])
    idx = rng.choice(len(OPS), size=n, p=share / share.sum())
    # arrivals ramp up over the first 60 s, then steady
    u = rng.random(n)
    t_s = np.where(u < 0.05, np.sqrt(rng.random(n)) * 60, 60 + rng.random(n) * (DURATION_S - 60))
    start = T0_NS + (t_s * 1e9).astype("int64")
    med = np.array([o[3] for o in OPS])[idx]
    service = np.where(med > 0, rng.lognormal(np.log(np.maximum(med, 1e-3)), 0.6, n), 0.0)
    # fault window 300..330 s: everything 5x slower
    in_fault = (t_s > 300) & (t_s < 330)
    service = np.where(in_fault, service * 5, service)
    queue = np.where(rng.random(n) < 0.1, rng.exponential(20.0, n), 0.0)
    queue = np.where(med > 0, queue, 0.0)
    intended = start - (queue * 1e6).astype("int64")
    end = start + (service * 1e6).astype("int64")
    r = rng.random(n)
    outcome = np.where(r < 0.965, "ok", np.where(r < 0.99, "fail", "info"))
    event = med == 0
    outcome = np.where(event, "ok", outcome)
    code = np.where(outcome == "ok", 0,
                    np.where(outcome == "info", -1, rng.choice(FAIL_CODES, size=n, p=FAIL_P)))
    users = rng.integers(0, 50_000, n)
    op = np.asarray(names, dtype=object)[idx]
    scen = np.asarray([o[2] for o in OPS], dtype=object)[idx]
    conn_k = (np.arange(n) // 8)
    df = pd.DataFrame({
        "w": w, "n": 0, "scenario": scen, "op": op,
        "user": pd.Series(users).map(lambda u: f"storm{u}"),
        "platform": np.asarray(["Android", "iOS", "Windows", "Web"], dtype=object)[users % 4],
        "instance": pd.Series(users % 3).map(lambda k: f"dev{k}"),
        "session": None, "intended": intended, "start": start, "end": end,
        "outcome": outcome, "code": code, "detail": "",
    })
    df = df.sort_values("end", kind="stable").reset_index(drop=True)
    df["n"] = np.arange(n)
    df["conn"] = [f"{w}/{k}" for k in conn_k]
    is_login = (df["op"] == "login") & (df["outcome"] == "ok")
    ids = np.arange(first_session, first_session + int(is_login.sum()))
    df.loc[is_login, "session"] = [f"S{i}" for i in ids]
    kicked = (df["op"] == "kicked_offline").to_numpy()
    df.loc[kicked, "detail"] = "multi_device"
    if len(ids):
        # each kick names the latest login sent at least 2 ms before it arrived
        login_start = df.loc[is_login, "start"].to_numpy()
        order = np.argsort(login_start, kind="stable")
        kick_start = df.loc[kicked, "start"].to_numpy()
        pos = np.searchsorted(login_start[order], kick_start - 2_000_000) - 1
        by = np.where(pos >= 0, ids[order][np.maximum(pos, 0)], -1)
        df.loc[kicked, "by"] = [f"S{i}" if i >= 0 else None for i in by]
    df.loc[df["outcome"] == "fail", "detail"] = "login failed"
    return df


def _race_line(rng: np.random.Generator, row: dict, i: int, w: str) -> str:
    surv = ["S-r%d-%d" % (i, k) for k in range(1 if rng.random() < 0.97 else 2)]
    row = dict(row)
    row["race"] = f"{w}-race{i}"
    row["detail"] = row["race"]
    row["outcome"] = "ok" if len(surv) == 1 else "fail"
    row["data"] = {"devices": [{"platform": "iOS", "instance": f"r{i}-d{k}", "session": f"S-r{i}-{k}",
                                "code": 0, "sent": row["start"], "done": row["end"],
                                "kicked_by": None, "alive": k == 0} for k in range(3)],
                   "settle_ms": 500, "send_spread_ms": 1.8, "survivors": surv,
                   "online": [{"Platform": "iOS", "Status": "Online"}], "policy": "single_platform"}
    return json.dumps(row, separators=(",", ":"))


def synthesize(run: Path, rows: int, seed: int = 7) -> None:
    """Write a synthetic run folder with ``rows`` journal rows."""
    rng = np.random.default_rng(seed)
    (run / "journal").mkdir(parents=True, exist_ok=True)
    per = [rows // WORKERS + (1 if k < rows % WORKERS else 0) for k in range(WORKERS)]
    first = 0
    total = 0
    for k, n in enumerate(per):
        w = f"w{k}"
        df = _synth_worker(rng, n, w, first)
        first += n
        races = (df["op"] == "race").to_numpy()
        flat = df.loc[~races]
        text = flat.to_json(orient="records", lines=True)
        with (run / "journal" / f"{w}.jsonl").open("w", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
            for i, row in enumerate(df.loc[races].to_dict("records")):
                row = {kk: (None if isinstance(v, float) and np.isnan(v) else v)
                       for kk, v in row.items()}
                fh.write(_race_line(rng, row, i, w) + "\n")
            if k == 0:
                for name, a, b in (("server_stall", 300, 330), ("drop_kick:0.2", 450, 470)):
                    fh.write(json.dumps({"w": w, "n": n + 1, "scenario": "mass_login", "op": "fault",
                                         "user": "", "intended": T0_NS + a * 10**9,
                                         "start": T0_NS + a * 10**9, "end": T0_NS + b * 10**9,
                                         "outcome": "info", "code": 0, "detail": name}) + "\n")
        total += n
    hist = pd.DataFrame({"Timestamp": np.arange(DURATION_S) + T0_NS // 10**9,
                         "User Count": np.minimum(np.arange(DURATION_S) * 50, 3000),
                         "Type": "", "Name": "Aggregated"})
    hist.to_csv(run / "locust_stats_history.csv", index=False)
    ex_t = [T0_NS + int(s * 1e9) for s in (305, 312, 461)]
    summary = {
        "run_id": run.name, "started": "2025-06-15T15:06:40Z", "finished": "2025-06-15T15:16:40Z",
        "duration_s": DURATION_S, "target": "embedded", "policy": "single_platform",
        "users_peak": 3000,
        "checks": {"kick_exactly_once": {"violations": 3, "examples": [
            {"session": "S1", "t": t, "what": "kicked twice"} for t in ex_t]},
            "policy_limit": {"violations": 0, "examples": []},
            "relogin_recovers": {"violations": 0, "examples": []}},
        "gates": {"latency_ms.login.p99": {"limit": 2000, "value": 95.2, "passed": True},
                  "error_ratio.overall": {"limit": 0.05, "value": 0.035, "passed": True}},
        "exit_code": 4,
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    (run / "config.yaml").write_text("target:\n  host: ''\n  policy: single_platform\n"
                                     "scenarios:\n  relogin_expiry:\n    relogin_bound_s: 10\n")
    (run / ".rows").write_text(str(total))


def end_to_end(run: Path, charts: bool = True) -> dict:
    """What the end of a run does (harness.runner.plugin ``_finish``): read the journals once,
    run every check, build summary.json's content and the report. Returns step timings (CPU s)."""
    sys.path.insert(0, str(ROOT))
    from harness.results.checks import run_checks
    from harness.results.report import build_report
    from harness.results.scan import scan_run
    from harness.results.summary import build_summary

    def cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    out = {}
    c = cpu()
    scan = scan_run(run)
    out["scan_cpu_s"] = cpu() - c
    c = cpu()
    checks = run_checks(run, history=scan.history)
    out["checks_cpu_s"] = cpu() - c
    out["violations"] = sum(r.violations for r in checks.values())
    scan.history = None
    c = cpu()
    build_summary(run, meta={}, checks=checks, gates_cfg={}, digest=scan.digest)
    out["summary_cpu_s"] = cpu() - c
    c = cpu()
    build_report(run, charts=charts, digest=scan.digest)
    out["report_cpu_s"] = cpu() - c
    out["rows"] = scan.rows
    return out


def peak_rss_mib() -> float:
    """This process's peak resident set, MiB: VmHWM (its own address space's high-water mark);
    ru_maxrss where /proc is absent (that one includes the parent's peak at spawn time)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(run: Path, charts: bool, load_only: bool, e2e: bool = False) -> None:
    sys.path.insert(0, str(ROOT))
    use0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = use0.ru_utime + use0.ru_stime
    t = time.perf_counter()
    steps: dict = {}
    if e2e:
        steps = end_to_end(run, charts)
    elif load_only:
        from harness.results.report.load import load_journal

        load_journal(run)
    else:
        from harness.results.report import build_report

        build_report(run, charts=charts)
    sec = time.perf_counter() - t
    use = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": sec, "cpu_s": use.ru_utime + use.ru_stime - cpu0,
                      "rss_mib": peak_rss_mib(), **steps}))


def _measure(run: Path, charts: bool, load_only: bool, e2e: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", str(run)] + (["--e2e"] if e2e else [])
    if not charts:
        cmd.append("--no-charts")
    if load_only:
        cmd.append("--load-only")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"child failed for {run}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sizes(args: argparse.Namespace) -> list[int]:
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    if any(s > HUGE for s in sizes) and not args.allow_huge:
        raise SystemExit(f"sizes above {HUGE:,} rows need --allow-huge")
    return sizes


def _cached_run(n: int, regen: bool) -> tuple[Path, float]:
    """The synthetic run of ``n`` rows under bench/out (made when missing or ``regen``) and its journal MB."""
    run = OUT / f"scale-{n}"
    if regen or not (run / ".rows").exists():
        import shutil

        shutil.rmtree(run, ignore_errors=True)
        t = time.perf_counter()
        synthesize(run, n)
        print(f"  (synthesized {n:,} rows in {time.perf_counter() - t:.1f} s)", flush=True)
    return run, sum(p.stat().st_size for p in (run / "journal").glob("*.jsonl")) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e5,1e6", help="comma-separated row counts (default 1e5,1e6)")
    ap.add_argument("--allow-huge", action="store_true",
                    help=f"allow sizes above {HUGE:,} rows (needs several GB of RAM and disk)")
    ap.add_argument("--no-charts", action="store_true")
    ap.add_argument("--regen", action="store_true", help="rebuild the cached synthetic runs")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="with --e2e: also the harness at git revision REV on the same files, side by side")
    ap.add_argument("--e2e", action="store_true",
                    help="the end of a run: journals read once, checks + summary + report (targets at "
                         "1e7 rows: <= 90 s CPU, <= 1.5 GiB peak RSS; flat memory beyond)")
    args = ap.parse_args()
    if args.child:
        _child(args.child, not args.no_charts, args.load_only, args.e2e)
        return
    if args.e2e:
        _e2e_main(args)
        return
    sizes = _sizes(args)
    print(f"{'rows':>12} {'file MB':>8} {'load s':>7} {'load MiB':>9} {'report s':>9} "
          f"{'report CPU s':>13} {'peak RSS MiB':>13} {'us/row':>7} {'time/row vs first':>18} "
          f"{'RSS/row vs first':>17}")
    first = None
    for n in sizes:
        run, mb = _cached_run(n, args.regen)
        load = _measure(run, not args.no_charts, True)
        rep = _measure(run, not args.no_charts, False)
        per_row = rep["seconds"] / n
        rss_row = rep["rss_mib"] / n
        if first is None:
            first = (per_row, rss_row)
        print(f"{n:>12,} {mb:>8.0f} {load['seconds']:>7.2f} {load['rss_mib']:>9.0f} "
              f"{rep['seconds']:>9.2f} {rep['cpu_s']:>13.2f} {rep['rss_mib']:>13.0f} "
              f"{per_row * 1e6:>7.2f} {per_row / first[0]:>18.2f} {rss_row / first[1]:>17.2f}",
              flush=True)
    print("targets at 1e6 rows: report <= 20 s, peak RSS <= 1536 MiB; ratios ~<= 1 mean "
          "no worse than linear (charts are a fixed ~3 s, so small runs cost more per row). "
          "Wall times are noisy when other processes share the CPUs; CPU s is steadier. "
          "'load' = load_journal with every column; the report loads only the columns it needs.")


_BASELINE_CHILD = """
import json, resource, sys, time
import numpy, pandas  # imported before the clock starts, as in the --e2e child
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
cpu0, t = cpu(), time.perf_counter()
sys.path.insert(0, sys.argv[1])
from harness.results.checks import run_checks
from harness.results.report import build_report
from harness.results.summary import build_summary
run, charts, out = sys.argv[2], sys.argv[3] == "1", {}
c = cpu(); checks = run_checks(run); out["checks_cpu_s"] = cpu() - c
c = cpu(); build_summary(run, meta={}, checks=checks, gates_cfg={}); out["summary_cpu_s"] = cpu() - c
c = cpu(); build_report(run, charts=charts); out["report_cpu_s"] = cpu() - c
out["cpu_s"] = cpu() - cpu0
out["seconds"] = time.perf_counter() - t
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for line in open("/proc/self/status", encoding="ascii"):  # own peak: ru_maxrss includes the parent's
    if line.startswith("VmHWM:"):
        out["rss_mib"] = int(line.split()[1]) / 1024
print(json.dumps(out))
"""


def _baseline_tree(rev: str, tmp: Path) -> Path:
    """A detached worktree of the repo at ``rev`` (the harness before a change)."""
    tree = tmp / f"baseline-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), rev], check=True)
    return tree


def _measure_baseline(tree: Path, run: Path, charts: bool) -> dict:
    """The end of a run as the harness at ``tree`` does it: checks, summary, report, each
    reading the journals itself (any revision's public API of the three)."""
    proc = subprocess.run([sys.executable, "-c", _BASELINE_CHILD, str(tree), str(run), "1" if charts else "0"],
                          capture_output=True, text=True, check=False, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"baseline child failed for {run}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _e2e_main(args: argparse.Namespace) -> None:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="report-scale-"))
    tree = _baseline_tree(args.baseline, tmp) if args.baseline else None
    try:
        _e2e_sizes(args, tree)
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _e2e_sizes(args: argparse.Namespace, tree: Path | None) -> None:
    sizes = _sizes(args)
    print(f"{'rows':>12} {'file MB':>8} {'scan':>6} {'checks':>7} {'summary':>8} {'report':>7} "
          f"{'total CPU s':>12} {'wall s':>7} {'peak RSS MiB':>13} {'CPU us/row':>11} {'RSS vs first':>13}")
    first = None
    for n in sizes:
        run, mb = _cached_run(n, args.regen)
        r = _measure(run, not args.no_charts, False, e2e=True)
        first = first or r["rss_mib"]
        print(f"{n:>12,} {mb:>8.0f} {r['scan_cpu_s']:>6.1f} {r['checks_cpu_s']:>7.1f} {r['summary_cpu_s']:>8.1f} "
              f"{r['report_cpu_s']:>7.1f} {r['cpu_s']:>12.1f} {r['seconds']:>7.1f} {r['rss_mib']:>13.0f} "
              f"{r['cpu_s'] / n * 1e6:>11.2f} {r['rss_mib'] / first:>13.2f}", flush=True)
        if tree is not None:
            b = _measure_baseline(tree, run, not args.no_charts)
            print(f"{'baseline':>12} {'':>8} {'-':>6} {b['checks_cpu_s']:>7.1f} {b['summary_cpu_s']:>8.1f} "
                  f"{b['report_cpu_s']:>7.1f} {b['cpu_s']:>12.1f} {b['seconds']:>7.1f} {b['rss_mib']:>13.0f} "
                  f"{b['cpu_s'] / n * 1e6:>11.2f}   ({args.baseline}: checks, summary, report each read the journals)")
            print(f"{'':>12} after/before: CPU {r['cpu_s'] / b['cpu_s']:.2f}x, peak RSS {r['rss_mib'] / b['rss_mib']:.2f}x",
                  flush=True)
    print("targets at 1e7 rows: total <= 90 s CPU, peak RSS <= 1536 MiB; RSS must not grow with rows "
          "like the rows do (10x rows must not need 10x memory). scan = the one read of the journals "
          "(History for the checks + Digest for summary and report).")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
