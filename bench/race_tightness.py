"""How tight kick races are: the spread of the devices' login send times per race (max - min
of ``sent``, ms), within one worker vs across workers (not a test: prints p50/p99).

Three headless runs of the real harness (``--scenario kick_race``, ``window_ms=0`` so every
device is meant to send at the same instant), each bounded by ``--seconds``:

* ``local``: one process, all devices of a race in it (a gevent barrier releases them);
* ``workers``: ``--processes 2``, races local to a worker (cross_worker false);
* ``across``: ``--processes 2`` with ``cross_worker: true``: each race's devices are split over
  both workers and start at the master's shared instant (``lead_ms`` ahead).

For ``across`` it also reports the spread among the devices of one race that share a worker,
to separate the cross-process part from the in-process part. Loopback only.

    .venv/bin/python bench/race_tightness.py [--seconds 15] [--users 6] [--devices 4]
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

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "race_tightness"
LOCUST = str(Path(sys.executable).parent / "locust")


def private_master_port() -> list[str]:
    """``--master-bind-port P --master-port P`` with a free loopback port P (never the default
    5557: other runs on this host use it)."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    return ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--master-port", str(port)]


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, int(-(-q * len(v) // 1)) - 1))]


def run(name: str, extra: list[str], args: argparse.Namespace) -> dict:
    out = OUT / name
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--only-summary", "--no-report", "--scenario", "kick_race",
           "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s", "--stop-timeout", "5",
           "--set", f"run.results_dir={out}", "--set", "run.run_id=run",
           "--set", f"scenarios.kick_race.devices={args.devices}", "--set", "scenarios.kick_race.window_ms=0",
           "--set", "scenarios.kick_race.settle_ms=200", "--set", "scenarios.kick_race.pause_s=0.05",
           "--set", f"scenarios.kick_race.lead_ms={args.lead_ms}", *extra]
    env = {k: v for k, v in os.environ.items() if k != "CHAT_SECRET_KEY"}
    with open(out / "locust.log", "w") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True)
        try:
            code = p.wait(timeout=args.seconds + 120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            code = p.wait()
    spreads, within, bad = [], [], 0
    for path in glob.glob(str(out / "run" / "journal" / "*.jsonl")):
        with open(path, "rb") as fh:
            for line in fh:
                r = json.loads(line)
                if r["op"] != "race":
                    continue
                if r["outcome"] != "ok":
                    bad += 1
                d = r["data"]
                if d.get("send_spread_ms") is not None:
                    spreads.append(d["send_spread_ms"])
                by_w: dict = {}
                for dev in d["devices"]:
                    if dev.get("sent"):
                        by_w.setdefault(dev.get("w"), []).append(dev["sent"])
                for sent in by_w.values():
                    if len(sent) > 1:
                        within.append((max(sent) - min(sent)) / 1e6)
    return {"run": name, "exit": code, "races": len(spreads), "races_not_ok": bad,
            "spread_p50_ms": pct(spreads, 0.5), "spread_p99_ms": pct(spreads, 0.99), "spread_max_ms": max(spreads or [0]),
            "same_worker_p50_ms": pct(within, 0.5), "same_worker_p99_ms": pct(within, 0.99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--users", type=int, default=6, help="concurrent race owners")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--lead-ms", type=float, default=200)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.users} race owners x "
          f"{args.devices} devices, window_ms=0, {args.seconds} s per run")
    runs = [("local", []), ("workers", ["--processes", "2", *private_master_port()]),
            ("across", ["--processes", "2", *private_master_port(), "--set", "scenarios.kick_race.cross_worker=true"])]
    results = []
    for name, extra in runs:
        r = run(name, extra, args)
        results.append(r)
        print(json.dumps(r), flush=True)

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    print("\nrun       races  not_ok  spread p50 / p99 ms   same-worker devices p50 / p99 ms")
    for r in results:
        print(f"{r['run']:<8} {r['races']:>6}  {r['races_not_ok']:>6}  {f(r['spread_p50_ms']):>9} / "
              f"{f(r['spread_p99_ms']):<9}  {f(r['same_worker_p50_ms']):>9} / {f(r['same_worker_p99_ms'])}")
    loc, acr = results[0], results[-1]
    if loc["spread_p50_ms"] and acr["spread_p50_ms"]:
        print(f"across workers vs in one process: p50 {acr['spread_p50_ms'] / loc['spread_p50_ms']:.1f}x, "
              f"p99 {acr['spread_p99_ms'] / loc['spread_p99_ms']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
