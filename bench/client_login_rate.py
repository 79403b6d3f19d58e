"""Benchmark: connect+login+close flows per second per generator core, side by side in ONE run.

Contenders, each against the same reference server (one process, pinned to CPU 1) with the
load generator pinned to CPU 0, same users (-u), same duration:

  harness  the mass_login scenario (locustfile.py) with hold_s=0, logout=false: connect ->
           sign a UserSig -> login -> close, journaled; counted from its journal (ok login rows)
  bare     bench/_bare_locustfile.py: a bare Locust User, raw gevent socket + wsproto, request
           event only (no harness, no journal, pre-made sigs); counted from its own ok times
  tsung    the same exchange in tsung's websocket plugin (when `tsung` is on PATH); counted from
           tsung.log's per-second `match` stats (answer has "code":0); failures from match.log
  artillery Artillery 2 (npm, installed once into a temp cache dir; skipped without npm): ws engine,
           payload CSV of pre-made sigs, one send with match $.code == 0, open model at saturation;
           counted from the server's ledger (sessions opened)
  floor    bench/_floor_client.c (built with cc): the same flow in C on epoll, what the kernel allows

Each contender runs ``--warmup`` s, then a measuring window of ``--seconds`` s in which the
bench samples the generator's and the server's CPU time (psutil); ``--rounds`` repeats all
contenders in alternating order. Printed per contender: successful flows/s (wall), generator
cores used, flows per generator CPU-second ("per core"); then the ratios harness/bare (target
>= 0.85), harness/artillery (>= 1), harness/tsung (>= 1.2), harness/floor (no target) and
harness/baseline (>= 1, with --baseline REV) as medians of per-round ratios. With ``--profile
auto`` (default) a missed target triggers one more, profiled harness run (py-spy when on PATH,
else cProfile) and prints where the harness's CPU goes.

Loopback only; every process started here is stopped by pid; files go to a temp dir.

  .venv/bin/python bench/client_login_rate.py [--seconds 10] [--users 50] [--rounds 3] [--only harness,bare]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root (harness.*)

from _common import (  # noqa: E402
    BENCH,
    LOOPBACK,
    REPO,
    SDKAPPID,
    RefServer,
    Result,
    Window,
    count_between,
    cpu_plan,
    fmt_table,
    journal_logins,
    ledger_logins,
    log_tail,
    mass_login_args,
    measure_window,
    median,
    new_secret,
    profile_summary,
    pyspy_summary,
    spawn,
    stop_tree,
    wait_exit,
)
from harness.usersig import gen_usersig  # noqa: E402

TARGET_BARE = 0.85
TARGET_TSUNG = 1.2
TARGET_ARTILLERY = 1.0
TARGET_FLOOR = 0.0  # no target: how far the harness is from what the kernel allows (printed on every run)
TARGET_BASELINE = 1.0  # a refactor must not lower the per-core rate (--baseline REV)
SIG_LIFETIME_S = 86400


# ----------------------------------------------------------------------------- harness (mass_login)
def harness_cmd(server: RefServer, users: int, run_s: int, results_dir: Path) -> list[str]:
    """The mass_login command line (after ``python``): connect+login+close flows, no report."""
    return mass_login_args(REPO / "locustfile.py", server, users, run_s, results_dir)


def run_harness(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str,
                repo: Path = REPO, name: str = "harness") -> Result:
    results = work / f"{name}-{tag}"
    results.mkdir()
    env = dict(os.environ, CHAT_SECRET_KEY=server.secret_key)
    run_s = int(args.warmup + args.seconds + 2)
    cmd = mass_login_args(repo / "locustfile.py", server, args.users, run_s, results)
    proc = spawn([sys.executable] + cmd, env=env, cwd=repo, cpu=cpu, log_path=work / f"{name}-{tag}.log")
    try:
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 120)  # bounded; stop_tree below ends it if still running
    finally:
        stop_tree(proc)
    if win is None:
        return Result(name, note="exited early: " + log_tail(work / f"{name}-{tag}.log"))
    ok, bad = journal_logins(results)
    return _windowed(name, win, ok, bad)


def baseline_runner(rev: str, work: Path) -> Callable[..., Result]:
    """A contender ``baseline``: the harness at git revision ``rev`` (a detached worktree in the
    temp dir), run exactly like ``harness``: the before/after of a change in one run."""
    tree = work / "baseline-tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev], check=True,
                   stdout=subprocess.DEVNULL)

    def run(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str) -> Result:
        return run_harness(server, work, args, cpu, tag, repo=tree, name="baseline")

    return run


def _windowed(name: str, win: Window, ok: list[int], bad: list[int]) -> Result:
    return Result(name, ok=count_between(ok, win.a_ns, win.b_ns), failed=count_between(bad, win.a_ns, win.b_ns),
                  seconds=win.seconds, gen_util=win.gen_util, server_util=win.server_util,
                  gen_sys=win.gen_sys_s / win.gen_cpu_s if win.gen_cpu_s else 0.0,
                  extra={"ok_total": len(ok), "failed_total": len(bad)})


# ----------------------------------------------------------------------------- bare Locust user
def run_bare(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str) -> Result:
    sigs = work / "bare-sigs.json"
    if not sigs.exists():
        users = [[f"bare_{i}", gen_usersig(SDKAPPID, server.secret_key, f"bare_{i}", SIG_LIFETIME_S)]
                 for i in range(args.users)]
        sigs.write_text(json.dumps({"sdkappid": SDKAPPID, "users": users}), encoding="utf-8")
    out = work / f"bare-{tag}.json"
    run_s = int(args.warmup + args.seconds + 2)
    env = dict(os.environ, BENCH_SIGS=str(sigs), BENCH_OUT=str(out))
    cmd = [sys.executable, "-m", "locust", "-f", str(BENCH / "_bare_locustfile.py"), "--headless",
           "-u", str(args.users), "-r", str(args.users), "-t", f"{run_s}s", "--host", server.ws_host,
           "--only-summary", "--loglevel", "WARNING"]
    proc = spawn(cmd, env=env, cwd=work, cpu=cpu, log_path=work / f"bare-{tag}.log")
    try:
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 60)  # bounded; stop_tree below ends it if still running
    finally:
        stop_tree(proc)
    if win is None or not out.exists():
        return Result("bare", note="no result: " + log_tail(work / f"bare-{tag}.log"))
    doc = json.loads(out.read_text(encoding="utf-8"))
    return _windowed("bare", win, doc["ok"], doc["fail"])


# ----------------------------------------------------------------------------- tsung
TSUNG_XML = """<?xml version="1.0"?>
<!DOCTYPE tsung SYSTEM "/usr/share/tsung/tsung-1.0.dtd" []>
<tsung loglevel="warning" dumptraffic="false" version="1.0">
  <clients>
    <client host="localhost" use_controller_vm="true" maxusers="{maxusers}">
{ips}
    </client>
  </clients>
  <servers>
    <server host="{host}" port="{port}" type="tcp"/>
  </servers>
  <load duration="{run_s}" unit="second">
    <arrivalphase phase="1" duration="{run_s}" unit="second">
      <users maxnumber="{users}" arrivalrate="{rate}" unit="second"/>
    </arrivalphase>
  </load>
  <options>
    <option name="file_server" id="accounts" value="{csv}"/>
  </options>
  <sessions>
    <session name="login_flow" probability="100" type="ts_websocket">
      <setdynvars sourcetype="file" fileid="accounts" delimiter=";" order="iter">
        <var name="uid"/>
        <var name="sig"/>
      </setdynvars>
      <for from="1" to="{loops}" incr="1" var="i">
        <request>
          <websocket type="connect" path="/ws"></websocket>
        </request>
        <request subst="true">
          <match do="log" when="nomatch">"code":0[,}}]</match>
          <websocket type="message" frame="text">{{"cmd":"login","seq":1,"sdkAppID":{sdkappid},"userID":"%%_uid%%","userSig":"%%_sig%%","platform":"Android","instanceID":"ts-%%_uid%%-%%_i%%"}}</websocket>
        </request>
        <request>
          <websocket type="close"></websocket>
        </request>
      </for>
    </session>
  </sessions>
</tsung>
"""

_DUMP = re.compile(r"^# stats: dump at (\d+)")
_COUNT = re.compile(r"^stats: (match|nomatch) (\d+) (\d+)\s*$")


def parse_tsung_log(text: str) -> list[tuple[int, int, int]]:
    """Per stats dump: ``(unix s, cumulative "code":0 answers, cumulative other answers)``."""
    dumps: list[tuple[int, int, int]] = []
    ts, match, nomatch = None, 0, 0
    for line in text.splitlines():
        m = _DUMP.match(line)
        if m:
            if ts is not None:
                dumps.append((ts, match, nomatch))
            ts = int(m.group(1))
            continue
        m = _COUNT.match(line)
        if m and ts is not None:
            if m.group(1) == "match":
                match = int(m.group(3))
            else:
                nomatch = int(m.group(3))
    if ts is not None:
        dumps.append((ts, match, nomatch))
    return dumps


def match_log_times(text: str) -> list[float]:
    """Timestamps (unix s) of tsung match.log entries: one per answer without "code":0."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        try:
            out.append(float(line.split()[0]))
        except (ValueError, IndexError):
            continue
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def run_tsung(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str) -> Result:
    tsung, epmd = shutil.which("tsung"), shutil.which("epmd")
    if not tsung or not epmd:
        return Result("tsung", note="tsung not installed")
    home = work / "tsung-home"
    home.mkdir(exist_ok=True)
    csv = work / "tsung-accounts.csv"
    if not csv.exists():
        csv.write_text("".join(f"tsung_{i};{gen_usersig(SDKAPPID, server.secret_key, f'tsung_{i}', SIG_LIFETIME_S)}\n"
                               for i in range(args.users)), encoding="utf-8")
    run_s = int(args.warmup + args.seconds + 2)
    xml = work / f"tsung-{tag}.xml"
    # Source addresses round-robin per session over 127.0.0.2..254, as the harness spreads its
    # connections: TIME_WAIT sockets must not exhaust the ports of one address.
    ips = "\n".join(f'      <ip value="127.0.0.{2 + i}"/>' for i in range(min(args.users, 253)))
    xml.write_text(TSUNG_XML.format(maxusers=args.users * 2 + 10, ips=ips, host=LOOPBACK, port=server.port, run_s=run_s,
                                    users=args.users, rate=max(2 * args.users, 10), csv=csv, loops=10_000_000,
                                    sdkappid=SDKAPPID), encoding="utf-8")
    logdir = work / f"tsung-{tag}"
    logdir.mkdir()
    epmd_port = _free_port()
    # Our own epmd on loopback (not a leftover daemon), stopped by pid below.
    epmd_proc = spawn([epmd, "-port", str(epmd_port), "-address", LOOPBACK], cpu=cpu,
                      log_path=work / "epmd.log")
    # Stats every second; Erlang distribution on loopback; no scheduler busy-waiting, so the CPU
    # time we sample is work, not spinning (at saturation tsung would not spin either).
    env = dict(os.environ, HOME=str(home), ERL_EPMD_PORT=str(epmd_port), ERL_EPMD_ADDRESS=LOOPBACK,
               ERL_ZFLAGS="-tsung_controller dumpstats_interval 1000 -kernel inet_dist_use_interface {127,0,0,1} "
                          "+sbwt none +sbwtdcpu none +sbwtdio none")
    proc = None
    try:
        time.sleep(0.3)
        proc = spawn([tsung, "-n", "-f", str(xml), "-l", str(logdir), "start"], env=env, cwd=work, cpu=cpu,
                     log_path=work / f"tsung-{tag}.log")
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 60)  # bounded; stop_tree below ends it if still running
    finally:
        stop_tree(proc)
        stop_tree(epmd_proc)
    runs = sorted(p for p in logdir.iterdir() if p.is_dir())
    if win is None or not runs or not (runs[-1] / "tsung.log").exists():
        return Result("tsung", note="no result: " + log_tail(work / f"tsung-{tag}.log"))
    dumps = parse_tsung_log((runs[-1] / "tsung.log").read_text(errors="replace"))
    mlog = runs[-1] / "match.log"
    logged = match_log_times(mlog.read_text(errors="replace")) if mlog.exists() else []
    a_s, b_s = win.a_ns / 1e9, win.b_ns / 1e9
    inside = [d for d in dumps if a_s <= d[0] <= b_s]
    if len(inside) < 2:
        return Result("tsung", note="too few stats dumps in the window")
    # ok and failed from the cumulative per-second stats between the first and last dump in the window
    (t0, m0, n0), (t1, m1, n1) = inside[0], inside[-1]
    # cross-check: failures match.log timestamps put in the bench's window vs the stats' failure rate
    logged_in = sum(1 for t in logged if a_s <= t < b_s)
    expected = (n1 - n0) / (t1 - t0) * (b_s - a_s)
    res = Result("tsung", ok=m1 - m0, failed=n1 - n0, seconds=float(t1 - t0), gen_util=win.gen_util,
                 server_util=win.server_util, gen_sys=win.gen_sys_s / win.gen_cpu_s if win.gen_cpu_s else 0.0,
                 extra={"ok_total": dumps[-1][1], "failed_total": dumps[-1][2], "match_log": len(logged)})
    if abs(logged_in - expected) > max(5.0, expected / 10):
        res.note = (f"match.log has {logged_in} failures in the window, tsung.log's nomatch rate "
                    f"says {expected:.0f}")
    return res


# ----------------------------------------------------------------------------- floor (C, epoll)
def _sig_lines(server: RefServer, work: Path, prefix: str, n: int, sep: str, bad_every: int = 0) -> Path:
    """``n`` pre-made accounts ``<prefix><i><sep><sig>`` (every ``bad_every``-th sig broken)."""
    path = work / f"{prefix}sigs{'-bad' if bad_every else ''}.txt"
    if not path.exists():
        rows = []
        for i in range(n):
            sig = gen_usersig(SDKAPPID, server.secret_key, f"{prefix}{i}", SIG_LIFETIME_S)
            if bad_every and i % bad_every == 0:
                sig = sig[:-6] + ("AAAAAA" if not sig.endswith("AAAAAA") else "BBBBBB")
            rows.append(f"{prefix}{i}{sep}{sig}\n")
        path.write_text("".join(rows), encoding="utf-8")
    return path


def _dumps_in_window(text: str, a_ns: int, b_ns: int) -> tuple[int, int, int, int, float] | None:
    """From ``<unix ns> <ok> <fail>`` cumulative lines: (ok, failed, ok total, failed total,
    seconds) between the first and last line inside ``[a_ns, b_ns]``."""
    dumps = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            dumps.append(tuple(int(p) for p in parts))
    inside = [d for d in dumps if a_ns <= d[0] <= b_ns]
    if len(inside) < 2:
        return None
    (t0, o0, f0), (t1, o1, f1) = inside[0], inside[-1]
    return o1 - o0, f1 - f0, dumps[-1][1], dumps[-1][2], (t1 - t0) / 1e9


def run_floor(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str) -> Result:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return Result("floor", note="no C compiler (cc) on PATH")
    exe = work / "floor"
    if not exe.exists():
        built = subprocess.run([cc, "-O2", "-o", str(exe), str(BENCH / "_floor_client.c")], capture_output=True,
                               text=True, check=False)
        if built.returncode != 0:
            return Result("floor", note="cc failed: " + built.stderr.strip()[-300:])
    sigs = _sig_lines(server, work, "floor_", args.users, " ")
    run_s = args.warmup + args.seconds + 2
    log_path = work / f"floor-{tag}.log"
    proc = spawn([str(exe), LOOPBACK, str(server.port), str(args.users), f"{run_s:g}", str(sigs), str(SDKAPPID),
                  str(min(args.users, 253))], cpu=cpu, log_path=log_path, cwd=work)
    try:
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 30)
    finally:
        stop_tree(proc)
    got = _dumps_in_window(log_path.read_text(errors="replace"), win.a_ns, win.b_ns) if win else None
    if win is None or got is None:
        return Result("floor", note="no result: " + log_tail(log_path))
    ok, bad, ok_total, bad_total, secs = got
    return Result("floor", ok=ok, failed=bad, seconds=secs, gen_util=win.gen_util, server_util=win.server_util,
                  gen_sys=win.gen_sys_s / win.gen_cpu_s if win.gen_cpu_s else 0.0,
                  extra={"ok_total": ok_total, "failed_total": bad_total})


# ----------------------------------------------------------------------------- artillery (Node.js)
ARTILLERY_VERSION = "artillery@2"
ARTILLERY_ACCOUNTS = 5000
ARTILLERY_YML = """config:
  target: "ws://{host}:{port}/ws"
  phases:
    - duration: {run_s}
      arrivalRate: {rate}
      maxVusers: {users}
  payload:
    path: "{csv}"
    fields: ["uid", "sig"]
    order: sequence
    skipHeader: false
scenarios:
  - engine: ws
    flow:
      - send:
          payload: '{{"cmd":"login","seq":1,"sdkAppID":{sdkappid},"userID":"{{{{ uid }}}}","userSig":"{{{{ sig }}}}","platform":"Android","instanceID":"art-{{{{ $uuid }}}}"}}'
          match:
            json: "$.code"
            value: 0
"""


def artillery_bin(args: argparse.Namespace) -> Path | str:
    """The artillery CLI, installed once with npm into a temp cache dir (bench-only; never a
    project dependency); a string saying why not when npm is absent or the install fails."""
    npm = shutil.which("npm")
    if not npm:
        return "npm not installed (apt-get install -y npm)"
    home = Path(args.artillery_dir or Path(tempfile.gettempdir()) / "chat-login-harness-artillery")
    exe = home / "node_modules" / ".bin" / "artillery"
    if exe.exists():
        return exe
    home.mkdir(parents=True, exist_ok=True)
    print(f"  installing {ARTILLERY_VERSION} with npm into {home} (once) ...", flush=True)
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", ARTILLERY_VERSION], cwd=home, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or not exe.exists():
        return "npm install artillery failed: " + (done.stderr or done.stdout).strip()[-300:]
    return exe


def run_artillery(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str,
                  bad_every: int = 0) -> Result:
    exe = artillery_bin(args)
    if isinstance(exe, str):
        return Result("artillery", note=exe)
    prefix = "artbad_" if bad_every else "art_"
    csv = _sig_lines(server, work, prefix, ARTILLERY_ACCOUNTS, ",", bad_every)
    run_s = int(args.warmup + args.seconds + 4)  # the phase; it starts once node is up (seconds, on a busy box)
    yml = work / f"artillery-{tag}.yml"
    yml.write_text(ARTILLERY_YML.format(host=LOOPBACK, port=server.port, run_s=run_s, rate=args.artillery_rate,
                                        users=args.users, csv=csv, sdkappid=SDKAPPID), encoding="utf-8")
    report = work / f"artillery-{tag}.json"
    log_path = work / f"artillery-{tag}.log"
    env = dict(os.environ, ARTILLERY_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", HOME=str(work))
    ledger = server.ledger
    assert ledger is not None
    offset = ledger.stat().st_size if ledger.exists() else 0
    proc = spawn([str(exe), "run", "--quiet", "--output", str(report), str(yml)], env=env, cwd=work, cpu=cpu,
                 log_path=log_path)
    win = None
    try:
        # the warm-up counts from the first session artillery opens (the server's ledger), not from launch
        needle = f'"userID":"{prefix}'.encode()
        deadline = time.monotonic() + 90
        started = None
        while started is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            with open(ledger, "rb") as fh:
                fh.seek(offset)
                if needle in fh.read():
                    started = time.monotonic()
        if started is not None:
            win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=started)
        wait_exit(proc, run_s + 90)
    finally:
        stop_tree(proc)
    if win is None:
        return Result("artillery", note="no sessions or exited early: " + log_tail(log_path))
    time.sleep(0.8)  # the server writes its ledger every 0.5 s
    ok_times = ledger_logins(server.ledger, prefix) if server.ledger else []
    counters: dict = {}
    try:
        counters = json.loads(report.read_text(encoding="utf-8"))["aggregate"]["counters"]
    except (OSError, ValueError, KeyError):
        pass
    failed = int(counters.get("errors.Failed capture or match", 0))
    res = Result("artillery", ok=count_between(ok_times, win.a_ns, win.b_ns), failed=0, seconds=win.seconds,
                 gen_util=win.gen_util, server_util=win.server_util,
                 gen_sys=win.gen_sys_s / win.gen_cpu_s if win.gen_cpu_s else 0.0,
                 extra={"ok_total": len(ok_times), "failed_total": failed,
                        "completed": int(counters.get("vusers.completed", 0)),
                        "skipped": int(counters.get("vusers.skipped", 0))})
    res.failed = failed  # whole run (Artillery reports totals only)
    return res


def check_artillery(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None) -> None:
    """A run with every 2nd sig broken: the ledger's count of opened sessions must equal
    Artillery's completed VUs (its match passed) and its match failures the rest."""
    res = run_artillery(server, work, args, cpu, "check", bad_every=2)
    if not res.seconds:
        print(f"artillery check: {res.note}")
        return
    x = res.extra
    print(f"artillery check (every 2nd sig bad): server ledger opened {x['ok_total']} sessions; artillery: "
          f"{x['completed']} VUs completed (match ok), {x['failed_total']} 'Failed capture or match', "
          f"{x['skipped']} skipped -> " + ("consistent" if abs(x["ok_total"] - x["completed"]) <= max(2, x["completed"] // 200)
                                          and x["failed_total"] > 0 else "INCONSISTENT"))


# ----------------------------------------------------------------------------- profiling
def profile_harness(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None) -> str:
    """Where the harness's CPU goes in mass_login (same users): py-spy samples of a normal run when
    ``py-spy`` is on PATH (accurate under gevent), else a run under cProfile (slower, skewed)."""
    results = work / "harness-profile"
    results.mkdir()
    env = dict(os.environ, CHAT_SECRET_KEY=server.secret_key)
    spy = shutil.which("py-spy")
    sample_s = int(min(args.seconds, 8))
    run_s = int(args.warmup + sample_s + 2)
    log_path = work / "harness-profile.log"
    out = work / ("harness.pyspy" if spy else "harness.prof")
    prefix = [sys.executable] if spy else [sys.executable, "-m", "cProfile", "-o", str(out)]
    proc = spawn(prefix + harness_cmd(server, args.users, run_s, results), env=env, cwd=REPO, cpu=cpu,
                 log_path=log_path)
    try:
        if spy:
            if wait_exit(proc, args.warmup) is None:
                subprocess.run([spy, "record", "-p", str(proc.pid), "-d", str(sample_s), "-r", "200", "-f", "raw",
                                "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=sample_s + 60, check=False)
        wait_exit(proc, run_s + 120)  # bounded; stop_tree below ends it if still running
    finally:
        stop_tree(proc)
    if not out.exists():
        return f"profile: no {'py-spy' if spy else 'cProfile'} output; " + log_tail(log_path)
    if spy:
        return pyspy_summary(out)
    return profile_summary(out) + "\n(install py-spy for a per-phase breakdown: cProfile's cumulative times are wrong under gevent)"


# ----------------------------------------------------------------------------- main
def _ratio(a: float, b: float) -> float | None:
    return a / b if a > 0 and b > 0 else None


def _verdict(r: float | None, target: float) -> str:
    if r is None:
        return "n/a"
    return "ok" if r >= target else "MISSED"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="connect+login+close flows per generator core: harness vs bare Locust vs tsung")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring window per contender and round, s (default 10)")
    p.add_argument("--warmup", type=float, default=4.0, help="start-up + ramp excluded before the window, s (default 4)")
    p.add_argument("--users", type=int, default=50, help="concurrent users / tsung sessions (default 50)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of all contenders, order alternating; ratios are medians of per-round ratios (default 3)")
    p.add_argument("--only", default="harness,bare,tsung,artillery,floor", metavar="NAMES",
                   help="comma-separated contenders to run (default harness,bare,tsung,artillery,floor)")
    p.add_argument("--artillery-rate", type=int, default=6000,
                   help="artillery arrivals/s (open model, capped at --users concurrent VUs; default 6000: saturated)")
    p.add_argument("--artillery-dir", default="", help="where npm installs artillery (default: a temp cache dir)")
    p.add_argument("--artillery-check", action="store_true",
                   help="first a run with every 2nd sig bad: the ledger's count must match artillery's match counts")
    p.add_argument("--no-tsung", action="store_true", help="skip tsung even when installed")
    p.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                   help="cProfile the harness when a target is missed (auto), always or never")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, journals, tsung logs)")
    p.add_argument("--baseline", default="", metavar="REV",
                   help="also run the harness at git revision REV (contender 'baseline'; ratio harness/baseline)")
    args = p.parse_args(argv)
    if not (1 <= args.users <= 5000) or not (3 <= args.seconds <= 600) or not (2 <= args.warmup <= 60) \
            or not (1 <= args.rounds <= 10):
        p.error("use 1 <= --users <= 5000, 3 <= --seconds <= 600, 2 <= --warmup <= 60, 1 <= --rounds <= 10")
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    runners = {"harness": run_harness, "bare": run_bare, "tsung": run_tsung, "artillery": run_artillery,
               "floor": run_floor}
    if not wanted or any(n not in runners for n in wanted):
        p.error(f"--only takes names from {', '.join(runners)} (got {args.only!r})")
    contenders = [(n, runners[n]) for n in runners if n in wanted and not (n == "tsung" and args.no_tsung)]

    gen_cpu, srv_cpu = cpu_plan()
    work = Path(tempfile.mkdtemp(prefix="bench-login-rate-"))
    if args.baseline:
        runners["baseline"] = baseline_runner(args.baseline, work)
        contenders.insert(1, ("baseline", runners["baseline"]))
        wanted.append("baseline")
    print(f"client_login_rate: users={args.users} window={args.seconds:g}s warmup={args.warmup:g}s "
          f"rounds={args.rounds}; generator on CPU {gen_cpu}, server on CPU {srv_cpu}; files in {work}", flush=True)
    if gen_cpu is None:
        print("note: fewer than 2 usable CPUs: no pinning; 'per core' is per generator CPU-second")
    rounds: list[dict[str, Result]] = []
    server = RefServer(work, secret_key=new_secret(), policy="multi_platform", cpu=srv_cpu,
                       ledger=work / "ledger.jsonl")
    try:
        server.start()
        if args.artillery_check:
            check_artillery(server, work, args, gen_cpu)
        for rnd in range(args.rounds):
            order = contenders if rnd % 2 == 0 else contenders[::-1]
            done: dict[str, Result] = {}
            for name, fn in order:
                res = fn(server, work, args, gen_cpu, f"r{rnd}")
                done[name] = res
                if res.seconds:
                    print(f"  round {rnd + 1} {name:9}: {res.rate:8.1f} flows/s, generator {res.gen_util:.2f} cores "
                          f"({res.gen_sys:.0%} kernel), {res.per_core:8.1f} flows per CPU-s, server "
                          f"{res.server_util:.2f} cores" + (f"  ({res.note})" if res.note else ""), flush=True)
                else:
                    print(f"  round {rnd + 1} {name:9}: {res.note}", flush=True)
            rounds.append(done)
            for skip in ("tsung", "artillery", "floor"):  # not installed: say so once, not every round
                if done.get(skip) is not None and not done[skip].seconds and (
                        "not installed" in done[skip].note or "no C compiler" in done[skip].note):
                    contenders = [c for c in contenders if c[0] != skip]
        missed, per_flow = report(rounds, [n for n in runners if n in wanted])
        if args.profile == "always" or (args.profile == "auto" and missed):
            print("\nwhere the harness's CPU goes (a separate, profiled mass_login run, same users) ...", flush=True)
            print(profile_harness(server, work, args, gen_cpu))
            if per_flow:
                print("\nCPU per successful flow (median): " + ", ".join(f"{n} {us:.0f} us" for n, us in per_flow.items()))
    finally:
        server.stop()
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "baseline-tree")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def report(rounds: list[dict[str, Result]], names: list[str]) -> tuple[bool, dict[str, float]]:
    """Print medians per contender and the ratios (median of per-round ratios, so each ratio
    compares runs made minutes apart at most). Returns (a target was missed, CPU us per flow)."""
    rows = []
    per_flow: dict[str, float] = {}
    for name in names:
        rs = [r[name] for r in rounds if name in r and r[name].seconds > 0]
        if not rs:
            note = next((r[name].note.splitlines()[0] for r in rounds if name in r), "not run")
            rows.append((name, "-", "-", "-", "-", "-", "-", note))
            continue
        per_flow[name] = median([1e6 / r.per_core for r in rs if r.per_core])
        rows.append((name, sum(r.ok for r in rs), sum(r.failed for r in rs), f"{median([r.rate for r in rs]):.1f}",
                     f"{median([r.gen_util for r in rs]):.2f}", f"{median([r.per_core for r in rs]):.1f}",
                     f"{median([r.server_util for r in rs]):.2f}", f"{len(rs)} rounds"))
    print()
    print(fmt_table(["contender", "ok logins", "failed", "flows/s", "gen cores", "flows/CPU-s", "server cores", ""],
                    rows))
    missed = False
    ratio_rows = []
    for other, target in (("bare", TARGET_BARE), ("artillery", TARGET_ARTILLERY), ("tsung", TARGET_TSUNG),
                          ("floor", TARGET_FLOOR), ("baseline", TARGET_BASELINE)):
        label = f"harness/{other}"
        pairs = [(r["harness"], r[other]) for r in rounds
                 if "harness" in r and other in r and r["harness"].seconds and r[other].seconds]
        core = [_ratio(h.per_core, o.per_core) for h, o in pairs]
        wall = [_ratio(h.rate, o.rate) for h, o in pairs]
        core = [x for x in core if x is not None]
        wall = [x for x in wall if x is not None]
        if not core:
            ratio_rows.append((label, "-", "-", f">= {target:g}" if target else "-", "n/a (not run)"))
            continue
        c, w = median(core), median(wall) if wall else 0.0
        verdict = _verdict(c, target) if target else "(the limit)"
        missed |= verdict == "MISSED"
        spread = f" [{min(core):.2f}..{max(core):.2f}]" if len(core) > 1 else ""
        ratio_rows.append((label, f"{c:.2f}{spread}", f"{w:.2f}", f">= {target:g}" if target else "-", verdict))
    print()
    print(fmt_table(["ratio", "per core", "wall flows/s", "target", "verdict (per core)"], ratio_rows))
    print("\nper core = successful flows per CPU-second of the generator's process tree (pinned to one CPU),"
          "\n           i.e. flows/s of one fully busy core; the ratio is the median of per-round ratios [min..max]."
          "\nwall     = successful flows/s in the window (capped by latency, the server and other load on the host).")
    for r in rounds:
        for name, res in r.items():
            if res.seconds and res.server_util >= 0.9:
                print(f"note: the server was CPU-bound during a {name} run ({res.server_util:.2f} cores): "
                      f"that wall rate is capped by it; compare per core")
    for name in names:
        failed = sum(r[name].failed for r in rounds if name in r)
        if failed:
            print(f"note: {name} had {failed} failed logins (not counted as flows)")
    return missed, per_flow


if __name__ == "__main__":
    sys.exit(main())
