"""Reconnect storms (a benchmark, not a test): how fast held sessions come back after a fault.

Runs ``locust -f locustfile.py --headless`` (mass_login: every user holds its session with
heartbeats) on the embedded target with one fault, then computes
:func:`harness.runner.faults.recovery_stats` from the run's journal and prints, per fault: sessions
lost, seconds from the fault until 50 % / 99 % / 100 % of them were back online (and the same
from the fault's end, i.e. the server up again), the peak login rate during the recovery
against the rate before it, reconnect attempts, and the codes seen.

    .venv/bin/python bench/recovery.py                         # 1,000 users: restart, stall, reset
    .venv/bin/python bench/recovery.py --users 300 --only server_restart
    .venv/bin/python bench/recovery.py --cap 1 --base 0.05     # another backoff

Every run is bounded (``-t``) and its processes end with it; results go to a temporary folder
unless ``--keep DIR``. Times in seconds.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.runner.faults import recovery_stats  # noqa: E402

LOCUST = str(Path(sys.executable).parent / "locust")

FAULTS = {
    "server_restart": "{kind: server_restart, at_s: %(at)s, down_s: 1}",
    "server_stall": "{kind: server_stall, at_s: %(at)s, duration_s: 2}",
    "reset": "{kind: reset, at_s: %(at)s, duration_s: 0.2, fraction: 0.5}",
}


def run_one(kind: str, args: argparse.Namespace, results: Path) -> dict:
    """One bounded headless run with fault ``kind``; returns the recovery figures and run facts."""
    at = args.ramp_s + 2
    fault = FAULTS[kind] % {"at": at}
    duration = at + args.after_s
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--only-summary", "--stop-timeout", "0",
           "-u", str(args.users), "-r", str(max(1, int(args.users / args.ramp_s))), "-t", f"{int(duration + 0.999)}s",
           "--scenario", "mass_login", "--no-report",
           "--set", f"run.results_dir={results}", "--set", f"run.run_id={kind}",
           "--set", f"scenarios.mass_login.hold_s={duration + 60}",
           "--set", f"scenarios.mass_login.heartbeat_s={args.heartbeat_s}",
           "--set", f"client.reconnect_base_s={args.base}", "--set", f"client.reconnect_cap_s={args.cap}",
           "--set", f"client.reconnect_max_attempts={args.attempts}",
           "--set", "gates.error_ratio.overall=1", "--set", f"faults=[{fault}]"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=duration + 120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own run's process group
        out, err = proc.communicate()
    run_dir = results / kind
    rows = []
    for p in sorted(glob.glob(str(run_dir / "journal" / "*.jsonl"))):
        with open(p, encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    stats = recovery_stats(rows)["faults"]
    summary = {}
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        pass
    checks = {k: v.get("violations") for k, v in (summary.get("checks") or {}).items()}
    logins = [r for r in rows if r.get("op") == "login" and r.get("outcome") == "ok"]
    return {"kind": kind, "exit": proc.returncode, "wall_s": time.monotonic() - t0, "stats": stats,
            "checks": checks, "rows": len(rows), "logins_ok": len(logins), "stderr": err[-600:]}


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f} s"


def report(res: dict, users: int) -> None:
    print(f"[{res['kind']}] {users} users, exit {res['exit']}, {res['rows']:,} journal rows, "
          f"checks with violations: {[k for k, v in res['checks'].items() if v] or 'none'}")
    if not res["stats"]:
        print("  no fault row in the journal:", res["stderr"])
        return
    for s in res["stats"]:
        b, a = s["back_s"], s["back_after_end_s"]
        print(f"  fault window {s['window_s']:.2f} s; sessions lost {s['lost']}, back {s['back']}, failed {s['failed']}, "
              f"abandoned {s['abandoned']}, without recovery {s['no_reconnect']}")
        if s["lost"]:
            print(f"  back online after the fault:  50% {_s(b['50'])}   99% {_s(b['99'])}   100% {_s(b['100'])}")
            print(f"  back online after its end:    50% {_s(a['50'])}   99% {_s(a['99'])}   100% {_s(a['100'])}")
            print(f"  reconnect attempts: mean {s['attempts']['mean']}, max {s['attempts']['max']}")
        before = s["login_rate_before_per_s"] or 0
        ratio = f" ({s['login_rate_peak_per_s'] / before:.1f}x)" if before else ""
        print(f"  peak login rate during recovery {s['login_rate_peak_per_s']}/s vs {before}/s before{ratio}")
        print(f"  codes seen: {s['codes'] or 'none'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--only", choices=sorted(FAULTS), default=None)
    p.add_argument("--ramp-s", type=float, default=5.0, help="seconds to start all users")
    p.add_argument("--after-s", type=float, default=15.0, help="run time after the fault starts")
    p.add_argument("--heartbeat-s", type=float, default=2.0)
    p.add_argument("--base", type=float, default=0.2, help="client.reconnect_base_s")
    p.add_argument("--cap", type=float, default=5.0, help="client.reconnect_cap_s")
    p.add_argument("--attempts", type=int, default=8, help="client.reconnect_max_attempts")
    p.add_argument("--keep", metavar="DIR", default=None, help="keep the run folders in DIR")
    args = p.parse_args(argv)
    from bench.hostile import raise_fd_limit

    raise_fd_limit()
    kinds = [args.only] if args.only else list(FAULTS)
    with tempfile.TemporaryDirectory(prefix="recovery-") as tmp:
        results = Path(args.keep) if args.keep else Path(tmp)
        print(f"backoff: full jitter, base {args.base} s, cap {args.cap} s, {args.attempts} attempts")
        for kind in kinds:
            report(run_one(kind, args, results), args.users)
    return 0


if __name__ == "__main__":
    sys.exit(main())
