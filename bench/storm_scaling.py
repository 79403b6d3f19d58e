"""Login-storm rate with 1 and 2 load-generating worker processes, side by side (not a test:
prints figures and the scaling ratio). Loopback only; each run is bounded (-t, users).

Each run is the real harness headless: ``--scenario mass_login`` with ``hold_s=0`` and no
logout, so every user loops connect -> login -> disconnect as fast as it can (a login
storm), ``--processes N`` workers, embedded server. The rate is ok logins per second over the
steady window (the first ``--warmup-s`` and the last second left out), from the journals.
While it runs the CPU of the server and of the load processes is sampled by pid, to say what
limits the rate (a process near 1.0 CPU-s/s is saturated; the machine has ``nproc`` CPUs).

    .venv/bin/python bench/storm_scaling.py [--users 256] [--seconds 15] [--procs 1,2]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "storm_scaling"
LOCUST = str(Path(sys.executable).parent / "locust")


def private_master_port() -> list[str]:
    """``--master-bind-port P --master-port P`` with a free loopback port P."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    return ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--master-port", str(port)]


def _tree(root: psutil.Process) -> tuple[list[psutil.Process], psutil.Process | None]:
    load, server = [], None
    for p in root.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "harness.targets.server" in cmd:
            server = p
        elif "locust" in cmd:
            load.append(p)
    return load, server


def _cpu(p: psutil.Process | None) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except (psutil.Error, AttributeError):
        return 0.0


def run(procs: int, args: argparse.Namespace) -> dict:
    out = OUT / f"p{procs}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--only-summary", "--no-report", "--scenario", "mass_login",
           "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s", "--stop-timeout", "2",
           "--set", f"run.results_dir={out}", "--set", "run.run_id=run", "--set", "scenarios.mass_login.hold_s=0",
           "--set", "scenarios.mass_login.logout=false", "--set", "gates.latency_ms={}",
           "--set", "gates.error_ratio={}", "--set", "checks.enabled=[journal_integrity]"]
    if procs > 0:
        cmd += ["--processes", str(procs)]
        cmd += private_master_port()  # never the default 5557: other runs on this host use it
    env = {k: v for k, v in os.environ.items() if k != "CHAT_SECRET_KEY"}
    log = open(out / "locust.log", "w")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                         start_new_session=True)
    root = psutil.Process(p.pid)
    first = last = None
    try:
        while p.poll() is None and time.monotonic() - t0 < args.seconds + 120:
            time.sleep(0.5)
            el = time.monotonic() - t0
            load, server = _tree(root)
            if procs == 0:
                load = [root]
            ct = psutil.cpu_times()
            snap = (el, sum(_cpu(x) for x in load), _cpu(server), _cpu(root) if procs > 0 else 0.0,
                    sum(ct) - ct.idle - getattr(ct, "iowait", 0.0), getattr(ct, "softirq", 0.0))
            if first is None and el >= args.warmup_s + 1:
                first = snap
            if el <= args.seconds:
                last = snap
        p.wait(timeout=max(1.0, args.seconds + 180 - (time.monotonic() - t0)))
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()
    ends = []
    failed = 0
    for path in glob.glob(str(out / "run" / "journal" / "*.jsonl")):
        with open(path, "rb") as fh:
            for line in fh:
                r = json.loads(line)
                if r["op"] == "login":
                    if r["outcome"] == "ok":
                        ends.append(r["end"])
                    else:
                        failed += 1
    res: dict = {"procs": procs or "local", "logins_ok": len(ends), "logins_failed": failed}
    if ends:
        t_lo = min(ends) + int(args.warmup_s * 1e9)
        t_hi = max(ends) - int(1e9)
        steady = [e for e in ends if t_lo <= e < t_hi]
        res["logins_per_s"] = round(len(steady) / ((t_hi - t_lo) / 1e9), 1) if t_hi > t_lo else None
    if first and last and last[0] > first[0]:
        dt = last[0] - first[0]
        res["cpu_load_per_s"] = round((last[1] - first[1]) / dt, 2)
        res["cpu_server_per_s"] = round((last[2] - first[2]) / dt, 2)
        res["cpu_master_per_s"] = round((last[3] - first[3]) / dt, 2)
        res["cpu_machine_busy"] = round((last[4] - first[4]) / dt / (os.cpu_count() or 1), 2)
        res["cpu_softirq_per_s"] = round((last[5] - first[5]) / dt, 2)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", default="1,2", help="worker process counts to compare (0 = local, no master)")
    ap.add_argument("--users", type=int, default=256, help="concurrent users storming")
    ap.add_argument("--seconds", type=int, default=15, help="run time of each run, s")
    ap.add_argument("--warmup-s", type=float, default=3.0, help="left out at the start, s")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before start; "
          f"{args.users} users, {args.seconds} s per run")
    results = []
    for n in [int(x) for x in args.procs.split(",") if x.strip()]:
        r = run(n, args)
        results.append(r)
        print(json.dumps(r), flush=True)
    print("\nprocs  logins/s  failed  cpu workers  cpu server  cpu master  softirq  (CPU-s per s)  machine busy")
    for r in results:
        print(f"{str(r['procs']):>5}  {r.get('logins_per_s') or 0:>8}  {r['logins_failed']:>6}  "
              f"{r.get('cpu_load_per_s', 0):>11}  {r.get('cpu_server_per_s', 0):>10}  {r.get('cpu_master_per_s', 0):>10}"
              f"  {r.get('cpu_softirq_per_s', 0):>7}  {r.get('cpu_machine_busy', 0):>27.0%}")
    rates = [r.get("logins_per_s") for r in results]
    if len(rates) >= 2 and rates[0] and rates[-1]:
        print(f"scaling ratio {results[-1]['procs']} vs {results[0]['procs']} processes: {rates[-1] / rates[0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
