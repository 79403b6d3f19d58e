"""Benchmark: XMPP login storm, harness vs Tsung, flows per generator CPU-second, side by side in ONE run.

One XMPP server for all contenders (ejabberd by default, ``--server prosody`` or
``--server ejabberd,prosody``), started here through the harness's own target classes
(``EjabberdTarget`` / ``ProsodyTarget``, policy unlimited, password accounts ``storm0_<j>``,
j < --users, all with one per-bench password), every thread of it pinned to CPU 1; the load
generator pinned to CPU 0. A flow = connect + stream + SASL PLAIN + stream restart + bind +
initial presence + close.

  harness  locustfile.py --scenario mass_login (hold_s=0, logout=false) against
           ``--host xmpp://127.0.0.1:<c2s>`` with ``target.xmpp.password``; counted from its
           journal: ok ``login`` rows whose end is in the window (a login row is ok only after
           the bind result, see harness/drivers/xmpp/driver.py).
  tsung    ts_jabber: one CSV account per session (setdynvars + ``xmpp_authenticate``), in a bounded
           ``<for>`` loop: connect, auth_sasl (PLAIN), connect (restart), auth_sasl_bind,
           presence:initial, close. The bind request carries ``<match do="log" when="nomatch">``
           on the bind result's ``<jid>``, so tsung.log's ``match`` counter counts binds that got
           a result (= real logins) and ``nomatch`` the rest; the bench takes the counters
           between the first and last per-second stats dump inside the window.

Both run ``--users`` concurrent users / sessions, ``--warmup`` s excluded, then a ``--seconds``
window in which the bench samples the generator's and the server's CPU time (psutil);
``--rounds`` repeats both in alternating order. Printed: successful flows/s (wall), generator
cores, flows per generator CPU-second, server cores; the ratio harness/tsung per core (median
of per-round ratios; target >= 1.2, ok / MISSED) and the logins/s the server sustained (wall,
best contender; with its cores). ``--profile`` (auto: when the target is missed) makes one more
harness run under py-spy (when on PATH; else cProfile) and prints where the harness's CPU goes
in the XMPP flow.

How tsung's success counting was verified (``--verify-tsung``, 2026-12-01, 50 sessions, 8 s):
the same tsung storm three times, with every CSV password right, every 2nd account's password
wrong, and all wrong; the bench prints match / nomatch of each. ejabberd 23.01: 142.6 / 68.4 /
0 matches per s (nomatch 0 / 149.1 / 257.6 per s); Prosody 0.12.3: 49.7 / 27.0 / 0 (nomatch
0 / 22.3 / 64.4). Half wrong halves the count, all wrong gives none: a failed SASL never
counts as a login. Getting there (seen with tsung's dumptraffic, ``--dump-traffic``): every
step uses ``ack="parse"`` with a regexp, because ``ack="local"`` takes any next packet and
ejabberd sends the restarted stream's header and features in two packets (the bind's match
was then applied to the features); a failed SASL skips the restart (``<if>`` on a
``dyn_variable``) and its bind gets the server's not-authorized stream error = one nomatch;
``close`` waits for the server's TCP close, since tsung's send retries are per session and
never reset (sending on a closing socket aborts a session after 3 flows). The harness side
needs no such check: its journal's login rows carry the server's verdict (ok, code 0 only
after the bind result). The harness is run with ``target.xmpp.mechanism=PLAIN``, the same as
tsung's ``auth_sasl`` (``auto`` would pick SCRAM: PBKDF2 per login on both sides).

Loopback only; every process started here is stopped by pid; files go to a temp dir.

  .venv/bin/python bench/xmpp_login_rate.py [--seconds 8] [--users 50] [--rounds 3] [--server ejabberd,prosody]
  .venv/bin/python bench/xmpp_login_rate.py --verify-tsung --seconds 6 --rounds 1
  .venv/bin/python bench/xmpp_login_rate.py --baseline REV   # + the harness at git REV, ratio harness/baseline
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root (harness.*)

from _common import (  # noqa: E402
    LOOPBACK,
    REPO,
    Result,
    cpu_plan,
    fmt_table,
    journal_logins,
    log_tail,
    measure_window,
    median,
    profile_summary,
    pyspy_summary,
    spawn,
    stop_tree,
    wait_exit,
)
from client_login_rate import _free_port, _ratio, _verdict, _windowed, match_log_times, parse_tsung_log  # noqa: E402

TARGET_TSUNG = 1.2
ACCOUNT_PREFIX = "storm0_"   # mass_login's pool naming on a single process: <prefix><worker>_<j>

#: Phases of one XMPP mass_login flow for py-spy (substring of a frame; inclusive shares overlap).
XMPP_PHASES: tuple[tuple[str, str], ...] = (
    ("whole flow (MassLogin.flow)", "MassLogin.flow "),
    ("  connect (TCP + stream header/features)", "XmppDriver.connect "),
    ("    TCP connect (_open_socket)", "XmppDriver._open_socket "),
    ("    stream open (_open_stream)", "XmppDriver._open_stream "),
    ("  login (SASL + restart + bind + presence)", "XmppDriver.login "),
    ("  close (</stream>, teardown)", "XmppDriver.close "),
    ("  Device set-up", "Device.__init__ "),
    ("  request event + journal row (emit)", "ChatUser.emit "),
    ("reader greenlets (XmppDriver._read_loop)", "XmppDriver._read_loop "),
    ("  decode (XmppDriver._decode)", "XmppDriver._decode "),
    ("  dispatch (XmppDriver._dispatch)", "XmppDriver._dispatch "),
    ("sends (XmppDriver._send)", "XmppDriver._send "),
    ("XMPP codec (harness/drivers/xmpp/codec.py)", "drivers/xmpp/codec.py:"),
    ("  expat / ElementTree", "ElementTree.py:"),
    ("journal flush (background)", "Journal.flush "),
    ("Locust stats/CSV writer", "StatsCSVFileWriter."),
    ("gevent hub (event loop, timers)", "Hub.run "),
)


# ----------------------------------------------------------------------------- the server
class XmppServer:
    """ejabberd / Prosody through the harness's target class, every thread pinned to one CPU."""

    def __init__(self, kind: str, work: Path, users: int, cpu: int | None) -> None:
        self.kind = kind
        self.work = work
        self.users = users
        self.cpu = cpu
        self.password = secrets.token_hex(8)
        self.target: Any = None
        self.pinned = 0

    def start(self) -> XmppServer:
        if self.kind == "ejabberd":
            from harness.targets.ejabberd import EjabberdTarget as cls
        else:
            from harness.targets.prosody import ProsodyTarget as cls
        run_dir = self.work / f"{self.kind}-run"
        run_dir.mkdir()
        self.target = cls(run_dir, policy="unlimited", auth="password")
        self.target.start(timeout=60)
        made = self.target.create_accounts(self.accounts(), lambda _u: self.password, exist_ok=True)
        self.pin()
        print(f"{self.kind} {self.target.version()} on {LOOPBACK}:{self.target.c2s_port} (pid {self.target.pid}), "
              f"{made} accounts {ACCOUNT_PREFIX}0..{self.users - 1}, {self.pinned} threads pinned to CPU {self.cpu}",
              flush=True)
        return self

    def accounts(self) -> list[str]:
        return [f"{ACCOUNT_PREFIX}{j}" for j in range(self.users)]

    def pids(self) -> list[int]:
        return self.target.pids() if self.target is not None else []

    def pin(self) -> None:
        """Pin every thread of every process of the server (the BEAM's schedulers included)."""
        if self.cpu is None:
            return
        n = 0
        for pid in self.pids():
            for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
                try:
                    os.sched_setaffinity(int(tid), {self.cpu})
                    n += 1
                except OSError:
                    pass
        self.pinned = n

    @property
    def c2s_port(self) -> int:
        return self.target.c2s_port

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def stop(self) -> None:
        if self.target is not None:
            self.target.stop()
            self.target = None


# ----------------------------------------------------------------------------- harness (mass_login over XMPP)
def harness_cmd(server: XmppServer, users: int, run_s: int, results_dir: Path) -> list[str]:
    return ["-m", "locust", "-f", str(REPO / "locustfile.py"), "--headless", "-u", str(users), "-r", str(users),
            "-t", f"{run_s}s", "--scenario", "mass_login", "--host", f"xmpp://{LOOPBACK}:{server.c2s_port}",
            "--set", "scenarios.mass_login.hold_s=0", "--set", "scenarios.mass_login.logout=false",
            "--set", f"target.xmpp.password={server.password}", "--set", "target.xmpp.domain=localhost",
            "--set", "target.xmpp.mechanism=PLAIN",  # as tsung's auth_sasl (auto would pick SCRAM: PBKDF2 per login)
            "--set", f"run.results_dir={results_dir}", "--set", "report.enabled=false",
            "--only-summary", "--loglevel", "WARNING"]


def run_harness(server: XmppServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str,
                repo: Path = REPO, name: str = "harness") -> Result:
    results = work / f"{server.kind}-{name}-{tag}"
    results.mkdir()
    run_s = int(args.warmup + args.seconds + 2)
    log_path = work / f"{server.kind}-{name}-{tag}.log"
    cmd = harness_cmd(server, args.users, run_s, results)
    cmd[cmd.index("-f") + 1] = str(repo / "locustfile.py")
    proc = spawn([sys.executable] + cmd, env=dict(os.environ), cwd=repo, cpu=cpu, log_path=log_path)
    try:
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 120)  # bounded; stop_tree below ends it if still running
    finally:
        stop_tree(proc)
    if win is None:
        return Result(name, note="exited early: " + log_tail(log_path))
    ok, bad = journal_logins(results)
    return _windowed(name, win, ok, bad)


def baseline_runner(rev: str, work: Path) -> Any:
    """A contender ``baseline``: the harness at git revision ``rev`` (a detached worktree in the
    temp dir, removed at the end), run exactly like ``harness``: before/after in one run."""
    tree = work / "baseline-tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev], check=True,
                   stdout=subprocess.DEVNULL)

    def run(server: XmppServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str) -> Result:
        return run_harness(server, work, args, cpu, tag, repo=tree, name="baseline")

    return run


# ----------------------------------------------------------------------------- tsung (ts_jabber)
TSUNG_XML = """<?xml version="1.0"?>
<!DOCTYPE tsung SYSTEM "/usr/share/tsung/tsung-1.0.dtd" []>
<tsung loglevel="warning" dumptraffic="{dump}" version="1.0">
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
    <option name="global_ack_timeout" value="5000"/>
    <option type="ts_jabber" name="domain" value="localhost"/>
    <option type="ts_jabber" name="userid_max" value="0"/>
    <option name="file_server" id="accounts" value="{csv}"/>
  </options>
  <sessions>
    <session name="xmpp_login" probability="100" type="ts_jabber">
      <setdynvars sourcetype="file" fileid="accounts" delimiter=";" order="iter">
        <var name="username"/>
        <var name="password"/>
      </setdynvars>
      <for from="1" to="{loops}" incr="1" var="i">
        <request subst="true"><jabber type="connect" ack="parse" regexp="stream:features"><xmpp_authenticate username="%%_username%%" passwd="%%_password%%"/></jabber></request>
        <request>
          <dyn_variable name="sasl" re="&lt;(success|failure)"/>
          <jabber type="auth_sasl" ack="parse" regexp="success|failure"/>
        </request>
        <if var="sasl" eq="success">
          <request><jabber type="connect" ack="parse" regexp="stream:features"/></request>
        </if>
        <request>
          <match do="log" when="nomatch">&lt;jid&gt;</match>
          <jabber type="auth_sasl_bind" ack="parse" regexp="&lt;/iq&gt;"/>
        </request>
        <if var="sasl" eq="success">
          <request><jabber type="presence:initial" ack="no_ack"/></request>
          <request><jabber type="close" ack="parse" regexp="^NEVER$"/></request>
        </if>
      </for>
    </session>
  </sessions>
</tsung>
"""


def run_tsung(server: XmppServer, work: Path, args: argparse.Namespace, cpu: int | None, tag: str,
              wrong_every: int = 0) -> Result:
    """One tsung run; ``wrong_every`` k > 0: every k-th account gets a wrong password (verification)."""
    name = "tsung"
    tsung, epmd = shutil.which("tsung"), shutil.which("epmd")
    if not tsung or not epmd:
        return Result(name, note="tsung not installed")
    home = work / "tsung-home"
    home.mkdir(exist_ok=True)
    csv = work / f"{server.kind}-tsung-accounts-{wrong_every}.csv"  # per server: its own password
    if not csv.exists():
        csv.write_text("".join(f"{u};{server.password + ('x' if wrong_every and j % wrong_every == 0 else '')}\n"
                               for j, u in enumerate(server.accounts())), encoding="utf-8")
    run_s = int(args.warmup + args.seconds + 2)
    stem = f"{server.kind}-tsung-{tag}"
    xml = work / f"{stem}.xml"
    ips = "\n".join(f'      <ip value="127.0.0.{2 + i}"/>' for i in range(min(args.users, 253)))
    xml.write_text(TSUNG_XML.format(maxusers=args.users * 2 + 10, ips=ips, host=LOOPBACK, port=server.c2s_port,
                                    run_s=run_s, users=args.users, rate=max(2 * args.users, 10), csv=csv,
                                    loops=10_000_000, dump="true" if args.dump_traffic else "false"), encoding="utf-8")
    logdir = work / stem
    logdir.mkdir()
    epmd_port = _free_port()
    epmd_proc = spawn([epmd, "-port", str(epmd_port), "-address", LOOPBACK], cpu=cpu, log_path=work / "epmd.log")
    env = dict(os.environ, HOME=str(home), ERL_EPMD_PORT=str(epmd_port), ERL_EPMD_ADDRESS=LOOPBACK,
               ERL_ZFLAGS="-tsung_controller dumpstats_interval 1000 -kernel inet_dist_use_interface {127,0,0,1} "
                          "+sbwt none +sbwtdcpu none +sbwtdio none")
    proc = None
    try:
        time.sleep(0.3)
        proc = spawn([tsung, "-n", "-f", str(xml), "-l", str(logdir), "start"], env=env, cwd=work, cpu=cpu,
                     log_path=work / f"{stem}.log")
        win = measure_window(proc, server, warmup_s=args.warmup, measure_s=args.seconds, launched=time.monotonic())
        wait_exit(proc, run_s + 60)
    finally:
        stop_tree(proc)
        stop_tree(epmd_proc)
    runs = sorted(p for p in logdir.iterdir() if p.is_dir())
    if win is None or not runs or not (runs[-1] / "tsung.log").exists():
        return Result(name, note="no result: " + log_tail(work / f"{stem}.log"))
    dumps = parse_tsung_log((runs[-1] / "tsung.log").read_text(errors="replace"))
    mlog = runs[-1] / "match.log"
    logged = match_log_times(mlog.read_text(errors="replace")) if mlog.exists() else []
    a_s, b_s = win.a_ns / 1e9, win.b_ns / 1e9
    inside = [d for d in dumps if a_s <= d[0] <= b_s]
    if len(inside) < 2:
        return Result(name, note="too few stats dumps in the window")
    (t0, m0, n0), (t1, m1, n1) = inside[0], inside[-1]
    res = Result(name, ok=m1 - m0, failed=n1 - n0, seconds=float(t1 - t0), gen_util=win.gen_util,
                 server_util=win.server_util, gen_sys=win.gen_sys_s / win.gen_cpu_s if win.gen_cpu_s else 0.0,
                 extra={"ok_total": dumps[-1][1], "failed_total": dumps[-1][2], "match_log": len(logged),
                        "errors": _tsung_errors((runs[-1] / "tsung.log").read_text(errors="replace"))})
    return res


def _tsung_errors(text: str) -> dict[str, int]:
    """The last cumulative value of each ``stats: error_*`` counter in tsung.log."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "stats:" and parts[1].startswith("error_"):
            try:
                out[parts[1]] = int(parts[3])
            except ValueError:
                pass
    return out


# ----------------------------------------------------------------------------- profiling
def profile_harness(server: XmppServer, work: Path, args: argparse.Namespace, cpu: int | None) -> str:
    results = work / f"{server.kind}-harness-profile"
    results.mkdir()
    spy = shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy")
                                     if (Path(sys.executable).parent / "py-spy").exists() else None)
    sample_s = int(min(args.seconds, 8))
    run_s = int(args.warmup + sample_s + 2)
    log_path = work / f"{server.kind}-harness-profile.log"
    out = work / ("harness.pyspy" if spy else "harness.prof")
    prefix = [sys.executable] if spy else [sys.executable, "-m", "cProfile", "-o", str(out)]
    proc = spawn(prefix + harness_cmd(server, args.users, run_s, results), env=dict(os.environ), cwd=REPO, cpu=cpu,
                 log_path=log_path)
    try:
        if spy and wait_exit(proc, args.warmup) is None:
            subprocess.run([spy, "record", "-p", str(proc.pid), "-d", str(sample_s), "-r", "200", "-f", "raw",
                            "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=sample_s + 60, check=False)
        wait_exit(proc, run_s + 120)
    finally:
        stop_tree(proc)
    if not out.exists():
        return f"profile: no {'py-spy' if spy else 'cProfile'} output; " + log_tail(log_path)
    if spy:
        return pyspy_summary(out, phases=XMPP_PHASES, substring=True, top=20)
    return profile_summary(out, top=20) + "\n(install py-spy for a per-phase breakdown)"


# ----------------------------------------------------------------------------- main
def _line(rnd: int, res: Result) -> str:
    if not res.seconds:
        return f"  round {rnd} {res.name:7}: {res.note}"
    return (f"  round {rnd} {res.name:7}: {res.rate:8.1f} flows/s, generator {res.gen_util:.2f} cores "
            f"({res.gen_sys:.0%} kernel), {res.per_core:8.1f} flows per CPU-s, server {res.server_util:.2f} cores, "
            f"{res.failed} failed" + (f"  ({res.note})" if res.note else ""))


def verify_tsung(server: XmppServer, work: Path, args: argparse.Namespace, cpu: int | None) -> None:
    """tsung with every password right, every other one wrong, all wrong: match must drop to
    about half, then to 0, and nomatch count the failed logins."""
    print(f"\nverifying tsung's success counting on {server.kind} (passwords all right / every 2nd wrong / all wrong) ...",
          flush=True)
    rows = []
    for label, k in (("all right", 0), ("half wrong", 2), ("all wrong", 1)):
        res = run_tsung(server, work, args, cpu, f"verify{k}", wrong_every=k)
        print(_line(1, res), flush=True)
        rows.append((label, res.ok, res.failed, f"{res.rate:.1f}", f"{res.failed / res.seconds:.1f}" if res.seconds else "-",
                     res.extra.get("ok_total", "-"), res.extra.get("failed_total", "-"),
                     ", ".join(f"{k2} {v}" for k2, v in res.extra.get("errors", {}).items()) or "-"))
    print(fmt_table(["passwords", "match (window)", "nomatch (window)", "match/s", "nomatch/s", "match (run)",
                     "nomatch (run)", "tsung errors (run)"], rows))


def run_server(kind: str, work: Path, args: argparse.Namespace, gen_cpu: int | None, srv_cpu: int | None,
               wanted: list[str]) -> dict[str, Any]:
    server = XmppServer(kind, work, args.users, srv_cpu)
    runners: dict[str, Any] = {"harness": run_harness, "tsung": run_tsung}
    if args.baseline:
        runners = {"harness": run_harness, "baseline": args.baseline_run, "tsung": run_tsung}
    contenders = [(n, runners[n]) for n in runners if n in wanted]
    rounds: list[dict[str, Result]] = []
    try:
        server.start()
        if args.verify_tsung:
            verify_tsung(server, work, args, gen_cpu)
            return {}
        for rnd in range(args.rounds):
            order = contenders if rnd % 2 == 0 else contenders[::-1]
            done: dict[str, Result] = {}
            for name, fn in order:
                server.pin()  # threads the VM started since
                res = fn(server, work, args, gen_cpu, f"r{rnd}")
                done[name] = res
                print(_line(rnd + 1, res), flush=True)
            rounds.append(done)
        out = report(kind, rounds, [n for n, _ in contenders])
        if args.profile == "always" or (args.profile == "auto" and out.get("missed")):
            print(f"\nwhere the harness's CPU goes in the XMPP flow ({kind}; a separate, profiled run, same users) ...",
                  flush=True)
            print(profile_harness(server, work, args, gen_cpu))
            if out.get("per_flow"):
                print("\nCPU per successful flow (median): "
                      + ", ".join(f"{n} {us:.0f} us" for n, us in out["per_flow"].items()))
        return out
    finally:
        server.stop()


def report(kind: str, rounds: list[dict[str, Result]], names: list[str]) -> dict[str, Any]:
    rows = []
    per_flow: dict[str, float] = {}
    best_wall = (0.0, "", 0.0)
    for name in names:
        rs = [r[name] for r in rounds if name in r and r[name].seconds > 0]
        if not rs:
            note = next((r[name].note.splitlines()[0] for r in rounds if name in r), "not run")
            rows.append((name, "-", "-", "-", "-", "-", "-", note))
            continue
        per_flow[name] = median([1e6 / r.per_core for r in rs if r.per_core])
        wall = median([r.rate for r in rs])
        srv = median([r.server_util for r in rs])
        if wall > best_wall[0]:
            best_wall = (wall, name, srv)
        rows.append((name, sum(r.ok for r in rs), sum(r.failed for r in rs), f"{wall:.1f}",
                     f"{median([r.gen_util for r in rs]):.2f}", f"{median([r.per_core for r in rs]):.1f}",
                     f"{srv:.2f}", f"{len(rs)} rounds"))
    print(f"\n{kind}:")
    print(fmt_table(["contender", "ok logins", "failed", "flows/s", "gen cores", "flows/CPU-s", "server cores", ""],
                    rows))
    pairs = [(r["harness"], r["tsung"]) for r in rounds
             if "harness" in r and "tsung" in r and r["harness"].seconds and r["tsung"].seconds]
    core = [x for x in (_ratio(h.per_core, t.per_core) for h, t in pairs) if x is not None]
    wall = [x for x in (_ratio(h.rate, t.rate) for h, t in pairs) if x is not None]
    out: dict[str, Any] = {"per_flow": per_flow, "missed": False}
    bpairs = [(r["harness"], r["baseline"]) for r in rounds
              if "harness" in r and "baseline" in r and r["harness"].seconds and r["baseline"].seconds]
    bcore = [x for x in (_ratio(h.per_core, b.per_core) for h, b in bpairs) if x is not None]
    if bcore:
        bspread = f" [{min(bcore):.2f}..{max(bcore):.2f}]" if len(bcore) > 1 else ""
        out["baseline_ratio"] = median(bcore)
        print()
        print(fmt_table(["ratio", "per core", "target", "verdict (per core)"],
                        [("harness/baseline", f"{median(bcore):.2f}{bspread}", ">= 1",
                          _verdict(median(bcore), 1.0))]))
    if core:
        c = median(core)
        verdict = _verdict(c, TARGET_TSUNG)
        out.update(missed=verdict == "MISSED", ratio=c, spread=(min(core), max(core)))
        spread = f" [{min(core):.2f}..{max(core):.2f}]" if len(core) > 1 else ""
        print()
        print(fmt_table(["ratio", "per core", "wall flows/s", "target", "verdict (per core)"],
                        [("harness/tsung", f"{c:.2f}{spread}", f"{median(wall):.2f}" if wall else "-",
                          f">= {TARGET_TSUNG:g}", verdict)]))
    if best_wall[0]:
        print(f"\n{kind} sustained {best_wall[0]:.0f} logins/s (wall, {best_wall[1]}'s window; server on one core, "
              f"{best_wall[2]:.2f} cores busy)")
        out["sustained"] = best_wall
    for r in rounds:
        for name, res in r.items():
            if res.seconds and res.server_util >= 0.9:
                print(f"note: {kind} was CPU-bound during a {name} run ({res.server_util:.2f} cores): "
                      f"that wall rate is capped by it; compare per core")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="XMPP login storm: harness vs tsung, flows per generator core")
    p.add_argument("--server", default="ejabberd", help="ejabberd, prosody, or both comma-separated (default ejabberd)")
    p.add_argument("--seconds", type=float, default=8.0, help="measuring window per contender and round, s (default 8)")
    p.add_argument("--warmup", type=float, default=4.0, help="start-up + ramp excluded before the window, s (default 4)")
    p.add_argument("--users", type=int, default=50, help="concurrent users / tsung sessions (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, order alternating (default 3)")
    p.add_argument("--only", default="harness,tsung", metavar="NAMES", help="contenders (default harness,tsung)")
    p.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                   help="profile the harness when the target is missed (auto), always or never")
    p.add_argument("--verify-tsung", action="store_true",
                   help="only check tsung's success counting: all passwords right vs every other one wrong")
    p.add_argument("--baseline", default="", metavar="REV",
                   help="also run the harness at git revision REV (contender 'baseline'; ratio harness/baseline)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--dump-traffic", action="store_true", help=argparse.SUPPRESS)  # tsung dumptraffic (debugging)
    args = p.parse_args(argv)
    if not (1 <= args.users <= 5000) or not (3 <= args.seconds <= 600) or not (2 <= args.warmup <= 60) \
            or not (1 <= args.rounds <= 10):
        p.error("use 1 <= --users <= 5000, 3 <= --seconds <= 600, 2 <= --warmup <= 60, 1 <= --rounds <= 10")
    kinds = [k.strip() for k in args.server.split(",") if k.strip()]
    if not kinds or any(k not in ("ejabberd", "prosody") for k in kinds):
        p.error(f"--server takes ejabberd and/or prosody (got {args.server!r})")
    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.baseline and "baseline" not in wanted:
        wanted.append("baseline")
    if not wanted or any(n not in ("harness", "tsung", "baseline") for n in wanted):
        p.error(f"--only takes names from harness, tsung, baseline (got {args.only!r})")
    if "baseline" in wanted and not args.baseline:
        p.error("--only baseline needs --baseline REV")
    gen_cpu, srv_cpu = cpu_plan()
    work = Path(tempfile.mkdtemp(prefix="bench-xmpp-login-"))
    os.chmod(work, 0o755)  # the servers run as their service users under it
    print(f"xmpp_login_rate: servers={','.join(kinds)} users={args.users} window={args.seconds:g}s "
          f"warmup={args.warmup:g}s rounds={args.rounds}; generator on CPU {gen_cpu}, server on CPU {srv_cpu}; "
          f"files in {work}", flush=True)
    summary = {}
    args.baseline_run = baseline_runner(args.baseline, work) if args.baseline else None
    try:
        for kind in kinds:
            summary[kind] = run_server(kind, work, args, gen_cpu, srv_cpu, wanted)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "baseline-tree")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if len(summary) > 1:
        print("\nsummary: " + "; ".join(
            f"{k}: harness/tsung {v['ratio']:.2f} per core, sustained {v['sustained'][0]:.0f} logins/s"
            for k, v in summary.items() if v.get("ratio") and v.get("sustained")))
    print("\nper core = successful flows per CPU-second of the generator's process tree (pinned to one CPU);"
          "\n           the ratio is the median of per-round ratios [min..max].")
    return 0


if __name__ == "__main__":
    sys.exit(main())
