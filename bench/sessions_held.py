"""How many logged-in, heartbeating sessions this machine holds with the embedded server
(not a test: prints figures). Loopback only; every step is bounded in users and time.

Each step runs the real harness headless (``locust -f locustfile.py --scenario mass_login``)
with ``-u N`` users that each log in once and then hold their session (``hold_s`` longer than
the run) with a heartbeat every ``--heartbeat-s`` (the client staggers the first one). While
the sessions are held it samples, by pid, the RSS and CPU of the load-generating worker
processes and of the embedded server, and the server's open descriptors. Afterwards it reads
the run's journals: ok logins, heartbeats answered within 1 s, unexpected disconnects, how
evenly heartbeats are spread over time, and how many loopback source addresses were used.

    .venv/bin/python bench/sessions_held.py                       # steps 5k,10k,20k,30k
    .venv/bin/python bench/sessions_held.py --steps 2000 --processes 1 --hold-s 40

Pass mark of a step: every user logged in, >= 99.9 % of the heartbeats sent while everyone is
logged in answered within 1 s (the ramp's heartbeats are reported beside it: the server's full
GC collections while its heap grows stall them), no session lost. The bench stops stepping
up at the first step that misses it and says why.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "sessions_held"
LOCUST = str(Path(sys.executable).parent / "locust")
MiB = 1024 * 1024


def private_master_port() -> list[str]:
    """``--master-bind-port P --master-port P`` with a free loopback port P."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    return ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--master-port", str(port)]


def _classify(root: psutil.Process) -> tuple[list[psutil.Process], psutil.Process | None]:
    """(worker processes, embedded server) among the master's descendants."""
    workers, server = [], None
    for p in root.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "harness.targets.server" in cmd:
            server = p
        elif "locust" in cmd:
            workers.append(p)
    return workers, server


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_step(n: int, args: argparse.Namespace) -> dict:
    out = OUT / f"u{n}-p{args.processes}"
    ramp_s = math.ceil(n / args.rate)
    run_s = ramp_s + args.hold_s
    cmd = [LOCUST, "-f", "locustfile.py", "--headless", "--only-summary", "--no-report", "--scenario", "mass_login",
           "-u", str(n), "-r", str(args.rate), "-t", f"{run_s}s", "--stop-timeout", "0",
           "--set", f"run.results_dir={out}", "--set", "run.run_id=run",
           "--set", "scenarios.mass_login.hold_s=86400", "--set", f"scenarios.mass_login.heartbeat_s={args.heartbeat_s}",
           "--set", "scenarios.mass_login.logout=false", "--set", f"scenarios.mass_login.accounts={n + 10}",
           "--set", "client.connect_timeout_s=20", "--set", "client.request_timeout_s=20",
           "--set", "gates.latency_ms={}", "--set", "gates.error_ratio={}",
           "--set", "checks.enabled=[journal_integrity]"]
    if args.processes > 1:
        cmd += ["--processes", str(args.processes)]
        cmd += private_master_port()  # never the default 5557: other runs on this host use it
    env = {k: v for k, v in os.environ.items() if k != "CHAT_SECRET_KEY"}
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    log = open(out / "locust.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    root = psutil.Process(proc.pid)
    samples = []
    base = None
    cpu0 = None
    srcs = None
    try:
        while proc.poll() is None and time.monotonic() - t0 < run_s + 240:
            time.sleep(1.0)
            el = time.monotonic() - t0
            workers, server = _classify(root)
            if server is None:
                continue
            loaders = workers if args.processes > 1 else [root]
            if base is None:
                base = (_rss(loaders), _rss([server]))
            try:
                fds = server.num_fds()
            except psutil.NoSuchProcess:
                continue
            s = {"t": el, "fds": fds, "rss_load": _rss(loaders), "rss_server": _rss([server]),
                 "cpu_load": _cpu(loaders), "cpu_server": _cpu([server])}
            samples.append(s)
            if srcs is None and el >= ramp_s + 10:
                srcs = source_spread(server)
            if cpu0 is None and el >= ramp_s + 5:
                cpu0 = s
        proc.wait(timeout=max(1.0, run_s + 300 - (time.monotonic() - t0)))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    held = [s for s in samples if s["t"] >= ramp_s + 5 and s["t"] <= run_s - 1]
    plateau = max(held, key=lambda s: s["fds"]) if held else (samples[-1] if samples else {})
    cpu_share = None
    if cpu0 and held and held[-1] is not cpu0:
        dt = held[-1]["t"] - cpu0["t"]
        cpu_share = {k: round((held[-1][f"cpu_{k}"] - cpu0[f"cpu_{k}"]) / dt, 2) for k in ("load", "server")}
    res = {"users": n, "processes": args.processes, "wall_s": round(time.monotonic() - t0, 1), "ramp_s": ramp_s,
           "server_fds_peak": plateau.get("fds"), "cpu_per_s_while_held": cpu_share, "client_sources": srcs}
    if plateau and base:
        res["rss_load_mib"] = round(plateau["rss_load"] / MiB, 1)
        res["rss_server_mib"] = round(plateau["rss_server"] / MiB, 1)
        res["load_kib_per_1000"] = round((plateau["rss_load"] - base[0]) / 1024 / n * 1000)
        res["server_kib_per_1000"] = round((plateau["rss_server"] - base[1]) / 1024 / n * 1000)
    res.update(read_journals(out / "run", n, ramp_s, run_s, args.heartbeat_s))
    res["pass"] = bool(res.get("logins_ok") == n and res.get("hb_held_within_1s_ratio", 0) >= 0.999
                       and res.get("lost_sessions", 1) == 0)
    return res


def source_spread(server: psutil.Process) -> dict | None:
    """The server's established connections by client (source) address: how many addresses,
    and the most connections from one (must stay well below the ~28k ephemeral ports)."""
    try:
        conns = server.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    per_ip = Counter(c.raddr.ip for c in conns if c.raddr and c.status == psutil.CONN_ESTABLISHED)
    if not per_ip:
        return None
    return {"addresses": len(per_ip), "max_per_address": max(per_ip.values()),
            "ephemeral_ports": open("/proc/sys/net/ipv4/ip_local_port_range").read().split()}


def read_journals(run_dir: Path, n: int, ramp_s: int, run_s: int, hb_s: float) -> dict:
    """Pass/fail figures from the step's journals. Heartbeats sent less than 1 s before the
    stop (-t after the first row, or 1 % of our own closes) are left out: they measure the teardown."""
    rows = []
    for path in glob.glob(str(run_dir / "journal" / "*.jsonl")):
        with open(path, "rb") as fh:
            for line in fh:
                r = json.loads(line)
                rows.append((r["op"], r["outcome"], r["code"], r["detail"][:40], r["intended"], r["start"], r["end"]))
    if not rows:
        return {"logins_ok": 0, "heartbeats": 0, "hb_within_1s_ratio": 0.0, "lost_sessions": 0}
    closes = sorted(e for op, out, *_x, e in rows if op == "disconnect" and out == "ok")
    t_first = min(st for *_x, st, _e in rows)
    # the stop began at -t (counted from the first row) or when 1 % of our own closes happened
    stop_ns = min(closes[len(closes) // 100] if closes else 1 << 63, t_first + int(run_s * 1e9))
    logins_ok = hb = hb_ok_1s = lost = hb_late = 0
    held_from = max((e for op, out, *_x, e in rows if op == "login" and out == "ok"), default=0) + 1_000_000_000
    held = held_ok = 0   # heartbeats once everyone is logged in (the ramp's are in hb/hb_ok_1s too)
    problems: Counter = Counter()
    hb_starts: list[int] = []
    login_end: list[int] = []
    for op, outcome, code, detail, intended, start, end in rows:
        if op == "login":
            if outcome == "ok":
                logins_ok += 1
                login_end.append(end)
            else:
                problems[("login", code, detail)] += 1
        elif op == "heartbeat":
            if start >= stop_ns - 1_000_000_000:
                hb_late += 1
                continue
            hb += 1
            hb_starts.append(start)
            ok_1s = outcome == "ok" and end - intended <= 1_000_000_000
            hb_ok_1s += ok_1s
            if start >= held_from:
                held += 1
                held_ok += ok_1s
            if outcome != "ok":
                problems[("heartbeat", code, detail)] += 1
        elif op == "connect" and outcome != "ok":
            problems[("connect", code, detail)] += 1
        elif op == "disconnect" and outcome != "ok" and end < stop_ns:
            lost += 1
    # heartbeat spread while everyone is held: per-second counts vs their mean
    spread = None
    if hb_starts and login_end:
        lo = max(login_end) + int(hb_s * 1e9)
        hi = min(t_first + int((run_s - 1) * 1e9), stop_ns - 1_000_000_000)
        secs = Counter((t - lo) // 1_000_000_000 for t in hb_starts if lo <= t < hi)
        if secs and hi > lo:
            counts = [secs.get(i, 0) for i in range(int((hi - lo) // 1_000_000_000))]
            mean = sum(counts) / len(counts)
            spread = {"per_s_mean": round(mean, 1), "per_s_max": max(counts),
                      "max_over_mean": round(max(counts) / mean, 2) if mean else None}
    return {"logins_ok": logins_ok, "heartbeats": hb, "hb_during_stop_ignored": hb_late, "hb_within_1s": hb_ok_1s,
            "hb_within_1s_ratio": round(hb_ok_1s / hb, 5) if hb else 0.0, "hb_held": held,
            "hb_held_within_1s_ratio": round(held_ok / held, 5) if held else 0.0, "lost_sessions": lost,
            "hb_spread_per_s": spread, "problems": {" ".join(map(str, k)): v for k, v in problems.most_common(5)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="5000,10000,20000,30000", help="users per step (comma separated)")
    ap.add_argument("--processes", type=int, default=2, help="load-generating worker processes (1 = local)")
    ap.add_argument("--rate", type=int, default=500, help="spawn rate, users/s")
    ap.add_argument("--heartbeat-s", type=float, default=30.0, help="heartbeat period while held, s")
    ap.add_argument("--hold-s", type=int, default=70, help="how long everyone is held after the ramp, s")
    ap.add_argument("--keep-going", action="store_true", help="do not stop at the first failing step")
    args = ap.parse_args()
    steps = [int(float(s)) for s in args.steps.split(",") if s.strip()]
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB; "
          f"{args.processes} load process(es), heartbeat every {args.heartbeat_s:g} s, held {args.hold_s} s")
    results = []
    for n in steps:
        r = run_step(n, args)
        results.append(r)
        print(json.dumps(r), flush=True)
        if not r["pass"] and not args.keep_going:
            print(f"stopping: {n} users did not pass (see {OUT}/u{n}-p{args.processes}/locust.log)")
            break
    print("\nusers  pass  logins_ok  hb<=1s held (incl. ramp)  lost  load MiB (KiB/1k)  server MiB (KiB/1k)"
          "  cpu/s load,server")
    for r in results:
        cpu = r.get("cpu_per_s_while_held") or {}
        print(f"{r['users']:>6}  {'yes' if r['pass'] else 'NO ':>4}  {r['logins_ok']:>9}  "
              f"{r.get('hb_held_within_1s_ratio', 0):>7.4f} ({r['hb_within_1s_ratio']:.4f})  {r['lost_sessions']:>5}  "
              f"{r.get('rss_load_mib', 0):>8} ({r.get('load_kib_per_1000', 0):>5})  "
              f"{r.get('rss_server_mib', 0):>10} ({r.get('server_kib_per_1000', 0):>5})  "
              f"{cpu.get('load')},{cpu.get('server')}")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        if "rss_load_mib" in a and "rss_load_mib" in b and b["users"] > a["users"]:
            d = (b["users"] - a["users"]) / 1000
            print(f"marginal RSS per 1,000 sessions ({a['users']} -> {b['users']}): load "
                  f"{(b['rss_load_mib'] - a['rss_load_mib']) * 1024 / d:.0f} KiB, server "
                  f"{(b['rss_server_mib'] - a['rss_server_mib']) * 1024 / d:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
