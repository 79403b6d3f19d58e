"""Benchmark: request/response on held sessions per generator core, side by side in ONE run.

Each user (tsung: session) connects and logs in once, then loops on that connection:
heartbeat, status, logout, login (same account, pre-made / cached UserSig), each request
waiting for its answer. Counted: answers with ``code`` 0 in the measuring window.

  harness  bench/_held_locustfile.py: the harness's Device/ChatClient/tim driver, every request
           journaled and fired as a request event; counted from the journal (ok rows)
  baseline (--baseline REV) the same locustfile run on the harness at git revision REV
  tsung    the same loop in tsung's websocket plugin (when installed); counted from the
           ``match`` counter ("code":0) of tsung.log's per-second stats

Same reference server (pinned to CPU 1), generator pinned to CPU 0, same --users, --rounds in
alternating order; ratios are medians of per-round ratios. Target: harness/tsung >= 1.5.

  .venv/bin/python bench/held_requests.py [--seconds 8] [--users 50] [--rounds 3] [--baseline REV]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import client_login_rate as clr  # noqa: E402
from _common import (BENCH, LOOPBACK, REPO, SDKAPPID, RefServer, Result, count_between, cpu_plan, fmt_table,  # noqa: E402
                     log_tail, measure_window, median, new_secret, spawn, stop_tree, wait_exit)
from harness.usersig import gen_usersig  # noqa: E402

TARGET_TSUNG = 1.5
OPS = ("heartbeat", "status", "logout", "login")


def journal_ok(run_root: Path) -> tuple[list[int], int]:
    """End times of ok request rows (OPS) and the count of failed ones, over every journal."""
    ok: list[int] = []
    bad = 0
    for path in sorted({p.resolve() for p in run_root.glob("*/journal/*.jsonl")}):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if row.get("op") in OPS:
                    if row.get("outcome") == "ok" and row.get("code") == 0:
                        ok.append(int(row["end"]))
                    else:
                        bad += 1
    return ok, bad


def run_harness(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str,
                repo: Path = REPO, name: str = "harness") -> Result:
    results = work / f"{name}-{tag}"
    results.mkdir()
    locustfile = repo / "bench" / "_held_locustfile.py"
    if repo != REPO:
        shutil.copy(BENCH / "_held_locustfile.py", locustfile)
    run_s = int(args.warmup + args.seconds + 2)
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(args.users),
           "-r", str(args.users), "-t", f"{run_s}s", "--scenario", "mass_login", "--host", server.ws_host,
           "--set", f"run.results_dir={results}", "--set", "report.enabled=false",
           "--set", f"scenarios.mass_login.accounts={args.users + 10}", "--only-summary", "--loglevel", "WARNING"]
    env = dict(os.environ, CHAT_SECRET_KEY=server.secret_key)
    log_path = work / f"{name}-{tag}.log"
    proc = spawn(cmd, env=env, cwd=repo, cpu=cpu, log_path=log_path)
    try:
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 120)
    finally:
        stop_tree(proc)
    if win is None:
        return Result(name, note="exited early: " + log_tail(log_path))
    ok, bad = journal_ok(results)
    return Result(name, ok=count_between(ok, win.a_ns, win.b_ns), failed=bad, seconds=win.seconds,
                  gen_util=win.gen_util, server_util=win.server_util,
                  gen_sys=win.gen_sys_s / win.gen_cpu_s if win.gen_cpu_s else 0.0)


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
    <session name="held" probability="100" type="ts_websocket">
      <setdynvars sourcetype="file" fileid="accounts" delimiter=";" order="iter">
        <var name="uid"/>
        <var name="sig"/>
      </setdynvars>
      <request>
        <websocket type="connect" path="/ws"></websocket>
      </request>
      <request subst="true">
        <match do="log" when="nomatch">"code":0[,}}]</match>
        <websocket type="message" frame="text">{login}</websocket>
      </request>
      <for from="1" to="{loops}" incr="1" var="i">
        <request>
          <match do="log" when="nomatch">"code":0[,}}]</match>
          <websocket type="message" frame="text">{{"cmd":"heartbeat","seq":2}}</websocket>
        </request>
        <request>
          <match do="log" when="nomatch">"code":0[,}}]</match>
          <websocket type="message" frame="text">{{"cmd":"status","seq":3}}</websocket>
        </request>
        <request>
          <match do="log" when="nomatch">"code":0[,}}]</match>
          <websocket type="message" frame="text">{{"cmd":"logout","seq":4}}</websocket>
        </request>
        <request subst="true">
          <match do="log" when="nomatch">"code":0[,}}]</match>
          <websocket type="message" frame="text">{login}</websocket>
        </request>
      </for>
    </session>
  </sessions>
</tsung>
"""
LOGIN = ('{{"cmd":"login","seq":1,"sdkAppID":{sdkappid},"userID":"%%_uid%%","userSig":"%%_sig%%",'
         '"platform":"Android","instanceID":"ts-%%_uid%%"}}')


def run_tsung(server: RefServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str) -> Result:
    tsung, epmd = shutil.which("tsung"), shutil.which("epmd")
    if not tsung or not epmd:
        return Result("tsung", note="tsung not installed")
    home = work / "tsung-home"
    home.mkdir(exist_ok=True)
    csv = work / "tsung-accounts.csv"
    if not csv.exists():
        csv.write_text("".join(f"tsheld_{i};{gen_usersig(SDKAPPID, server.secret_key, f'tsheld_{i}', 86400)}\n"
                               for i in range(args.users)), encoding="utf-8")
    run_s = int(args.warmup + args.seconds + 2)
    xml = work / f"tsung-{tag}.xml"
    ips = "\n".join(f'      <ip value="127.0.0.{2 + i}"/>' for i in range(min(args.users, 253)))
    xml.write_text(TSUNG_XML.format(maxusers=args.users * 2 + 10, ips=ips, host=LOOPBACK, port=server.port,
                                    run_s=run_s, users=args.users, rate=max(2 * args.users, 10), csv=csv,
                                    loops=10_000_000, login=LOGIN.format(sdkappid=SDKAPPID)), encoding="utf-8")
    logdir = work / f"tsung-{tag}"
    logdir.mkdir()
    epmd_port = clr._free_port()
    epmd_proc = spawn([epmd, "-port", str(epmd_port), "-address", LOOPBACK], cpu=cpu, log_path=work / "epmd.log")
    env = dict(os.environ, HOME=str(home), ERL_EPMD_PORT=str(epmd_port), ERL_EPMD_ADDRESS=LOOPBACK,
               ERL_ZFLAGS="-tsung_controller dumpstats_interval 1000 -kernel inet_dist_use_interface {127,0,0,1} "
                          "+sbwt none +sbwtdcpu none +sbwtdio none")
    proc = None
    try:
        time.sleep(0.3)
        proc = spawn([tsung, "-n", "-f", str(xml), "-l", str(logdir), "start"], env=env, cwd=work, cpu=cpu,
                     log_path=work / f"tsung-{tag}.log")
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 60)
    finally:
        stop_tree(proc)
        stop_tree(epmd_proc)
    runs = sorted(p for p in logdir.iterdir() if p.is_dir())
    if win is None or not runs or not (runs[-1] / "tsung.log").exists():
        return Result("tsung", note="no result: " + log_tail(work / f"tsung-{tag}.log"))
    dumps = clr.parse_tsung_log((runs[-1] / "tsung.log").read_text(errors="replace"))
    a_s, b_s = win.a_ns / 1e9, win.b_ns / 1e9
    inside = [d for d in dumps if a_s <= d[0] <= b_s]
    if len(inside) < 2:
        return Result("tsung", note="too few stats dumps in the window")
    (t0, m0, n0), (t1, m1, n1) = inside[0], inside[-1]
    return Result("tsung", ok=m1 - m0, failed=n1 - n0, seconds=float(t1 - t0), gen_util=win.gen_util,
                  server_util=win.server_util, gen_sys=win.gen_sys_s / win.gen_cpu_s if win.gen_cpu_s else 0.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="request/response on held sessions per generator core: harness vs tsung")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="harness,tsung")
    p.add_argument("--baseline", default="", metavar="REV", help="also run the harness at git revision REV")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    runners = {"harness": run_harness, "tsung": run_tsung}
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    contenders = [(n, runners[n]) for n in runners if n in wanted]
    gen_cpu, srv_cpu = cpu_plan()
    work = Path(tempfile.mkdtemp(prefix="bench-held-"))
    if args.baseline:
        tree = work / "baseline-tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), args.baseline],
                       check=True, stdout=subprocess.DEVNULL)
        contenders.insert(1, ("baseline", lambda s, w, a, c, t: run_harness(s, w, a, c, t, repo=tree, name="baseline")))
    names = [n for n, _ in contenders]
    print(f"held_requests: users={args.users} window={args.seconds:g}s rounds={args.rounds}; generator on CPU "
          f"{gen_cpu}, server on CPU {srv_cpu}; files in {work}", flush=True)
    rounds: list[dict[str, Result]] = []
    server = RefServer(work, secret_key=new_secret(), policy="multi_platform", cpu=srv_cpu)
    try:
        server.start()
        for rnd in range(args.rounds):
            done: dict[str, Result] = {}
            for name, fn in (contenders if rnd % 2 == 0 else contenders[::-1]):
                res = done[name] = fn(server, work, args, gen_cpu, f"r{rnd}")
                if res.seconds:
                    print(f"  round {rnd + 1} {name:8}: {res.rate:8.1f} requests/s, generator {res.gen_util:.2f} cores "
                          f"({res.gen_sys:.0%} kernel), {res.per_core:8.1f} requests per CPU-s, failed {res.failed}",
                          flush=True)
                else:
                    print(f"  round {rnd + 1} {name:8}: {res.note}", flush=True)
            rounds.append(done)
        rows = []
        for name in names:
            rs = [r[name] for r in rounds if name in r and r[name].seconds > 0]
            if rs:
                rows.append((name, sum(r.ok for r in rs), sum(r.failed for r in rs), f"{median([r.rate for r in rs]):.1f}",
                             f"{median([r.gen_util for r in rs]):.2f}", f"{median([r.per_core for r in rs]):.1f}",
                             f"{median([1e6 / r.per_core for r in rs if r.per_core]):.0f}"))
        print()
        print(fmt_table(["contender", "ok answers", "failed", "req/s", "gen cores", "req/CPU-s", "CPU us/req"], rows))
        out = []
        for other, target in (("tsung", TARGET_TSUNG), ("baseline", 1.0)):
            rs = [r["harness"].per_core / r[other].per_core for r in rounds
                  if "harness" in r and other in r and r["harness"].per_core and r[other].per_core]
            if rs:
                c = median(rs)
                out.append((f"harness/{other}", f"{c:.2f} [{min(rs):.2f}..{max(rs):.2f}]", f">= {target:g}",
                            "ok" if c >= target else "MISSED"))
        print()
        print(fmt_table(["ratio (per core)", "median [min..max]", "target", "verdict"], out))
    finally:
        server.stop()
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "baseline-tree")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
